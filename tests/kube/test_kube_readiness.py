"""The services that work through the Kubernetes API (the `--kube` watcher, the cluster injector,
the recorder in cluster mode, the auth service) answer /readyz by the API answering now: 503 with
one line saying how long it has been silent once it has not answered for
CHAOSBUS_KUBE_UNANSWERED_S, 200 again once it answers. A server refusing the service's credentials
(401) counts as silent. And the cluster injector, whose faults all go through the API, makes no
kernel backend (no libnftables loaded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.prom import free_port
from helpers.readiness import readyz_until, stop_groups
from helpers.signing import write_keys
from kube.conftest import KubeEnv

from chaosbus.common import natsauth, natsserver

pytestmark = pytest.mark.integration

UNANSWERED_S = 2.0  # the bound the processes run with: a test waits seconds, not the default 20


# The injector's entry point, writing at exit which of `NODE_ONLY` it had loaded (a clean SIGTERM
# stop runs atexit handlers).
LOADED_PROBE = (
    "import atexit, json, sys\n"
    "out, node_only = sys.argv[1], sys.argv[2].split(',')\n"
    "def report():\n"
    "    loaded = sorted(m for m in sys.modules if any(m == n or m.startswith(n + '.') for n in node_only))\n"
    "    open(out, 'w').write(json.dumps(loaded))\n"
    "atexit.register(report)\n"
    "from chaosbus.injector.__main__ import main\n"
    "main(sys.argv[3:])\n"
)
# What only a node's faults use: the kernel libraries and the node fault modules.
NODE_ONLY = (
    "pyroute2",
    "chaosbus.injector.backends.nft",
    "chaosbus.injector.backends.tc",
    "chaosbus.injector.backends._glue.libnft",
    "chaosbus.injector.faults.partition",
    "chaosbus.injector.faults.shaping",
    "chaosbus.injector.drops",
    "chaosbus.injector.readback",
)


def service(
    kube: KubeEnv, nats_server: natsserver.EmbeddedServer, tmp_path: Path, role: str, *, probe: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    start = [sys.executable, "-m", f"chaosbus.{role}"] if probe is None else [sys.executable, "-c", *probe]
    argv = [*start, "--kubeconfig", str(kube.kubeconfig)]
    argv += ["--nats", nats_server.url, "--metrics-port", str(port)]
    if role == "injector":
        argv += ["--cluster", "--journal", str(tmp_path / "cluster-journal.db")]
    if role == "authcallout":
        seed = tmp_path / "issuer.seed"
        natsauth.write_private(seed, natsauth.new_seed(account=True))
        argv += ["--issuer-seed", str(seed)]
    env = {
        **os.environ,
        "CHAOSBUS_KUBE_UNANSWERED_S": str(UNANSWERED_S),
        "CHAOSBUS_KEYS_DIR": str(write_keys(tmp_path / "keys")),
        "CHAOSBUS_STATE_DIR": str(tmp_path / "state"),
    }
    with open(tmp_path / f"{role}.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, start_new_session=True)
    return proc, port


@pytest.fixture(params=["watcher", "injector", "recorder", "authcallout"])
def running(
    request: pytest.FixtureRequest, kube: KubeEnv, nats_server: natsserver.EmbeddedServer, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    kube.need_fake("an API server stopped and started again under a running service")
    proc, port = service(kube, nats_server, tmp_path, request.param)
    try:
        # A loaded machine starts Python (and kubernetes_asyncio) slowly.
        got = readyz_until(port, 200, 60)
        assert got == (200, "ready"), (got, (tmp_path / f"{request.param}.log").read_text()[-3000:])
        yield proc, port
    finally:
        stop_groups(proc)


def test_readyz_says_503_while_the_kubernetes_api_is_silent_and_200_once_it_answers(
    running: tuple[subprocess.Popen[bytes], int], kube: KubeEnv
) -> None:
    _, port = running
    fake = kube.need_fake("stopped and started")
    fake.stop()
    try:
        status, body = readyz_until(port, 503, 15, saying="Kubernetes API unanswered")
        assert status == 503 and body.startswith("Kubernetes API unanswered for "), (status, body)
        assert "\n" not in body.strip()
    finally:
        fake.start()
    assert readyz_until(port, 200, 15) == (200, "ready")


@pytest.mark.parametrize("running", ["recorder", "authcallout"], indirect=True)
def test_readyz_says_503_while_the_kubernetes_api_refuses_the_services_credentials(
    running: tuple[subprocess.Popen[bytes], int], kube: KubeEnv
) -> None:
    """A revoked token: the server is up, every request the service makes is refused (401)."""
    _, port = running
    fake = kube.need_fake("a token the server refuses")
    fake.refuse_token("fake-token")
    try:
        status, body = readyz_until(port, 503, 15, saying="Kubernetes API unanswered")
        assert status == 503 and "HTTP 401" in body and "credentials" in body, (status, body)
    finally:
        fake.refuse_token("fake-token", refused=False)
    assert readyz_until(port, 200, 15) == (200, "ready")


def test_the_cluster_injector_makes_no_kernel_backend(
    kube: KubeEnv, nats_server: natsserver.EmbeddedServer, tmp_path: Path
) -> None:
    """Ready, with its faults' machinery up, it has not loaded libnftables (whose contexts come with
    a reaper thread and a pool of closers), pyroute2 or any node fault: nothing of the node's."""
    kube.need_fake("what the process makes does not depend on which API server it talks to")
    loaded = tmp_path / "loaded.json"
    probe = [LOADED_PROBE, str(loaded), ",".join(NODE_ONLY)]
    proc, port = service(kube, nats_server, tmp_path, "injector", probe=probe)
    try:
        assert readyz_until(port, 200, 60) == (200, "ready"), (tmp_path / "injector.log").read_text()[-3000:]
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libnftables" not in maps
    finally:
        stop_groups(proc)
    assert json.loads(loaded.read_text()) == []
