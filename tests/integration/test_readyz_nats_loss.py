"""Every NATS service's /readyz against a real nats-server that goes away and comes back: 200 once
the service is connected and its main loop runs (the watcher's snapshot published, the scheduler
leading with its replay done
or a standby reading the leader lease, the recorder's and the injectors' consumers bound, the auth service
listening), 503 saying why while nats-server is stopped, 200 again once it is back on the same
port and store. `/metrics` answered 200 throughout, which is what the probes used to ask.

The services are started once for the module: the outage is one, observed by each case.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.prom import free_port
from helpers.readiness import readyz, stop_groups
from kubefake import FakeApiServer

from chaosbus.common import natsauth, natsserver

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("readyz-nats-loss")]
UP_WITHIN_S = 90.0  # generous: six Python services starting on a loaded 2-core machine
AWAY_WITHIN_S = 30.0

# The services that work through the Kubernetes API (the cluster injector, the auth service) are
# ready only while it answers (tests/kube/test_kube_readiness.py): they get the in-repo API fake, up
# throughout.


def argvs(url: str, folder: Path, api: FakeApiServer) -> dict[str, list[str]]:
    answered = api.write_kubeconfig(folder / "kubeconfig")
    seed = folder / "issuer.nk"
    seed.write_text(natsauth.new_seed(account=True))
    py = [sys.executable, "-m"]
    return {
        "watcher": [*py, "chaosbus.watcher"],
        # A lease that outlives the outage: the test is about readiness, not a leader stepping down.
        "scheduler": [*py, "chaosbus.scheduler", "--instance", "s1", "--leader-ttl", "60"],
        "second-scheduler": [*py, "chaosbus.scheduler", "--instance", "s2", "--leader-ttl", "60"],
        "recorder": [*py, "chaosbus.recorder"],
        "injector": [*py, "chaosbus.injector", "--node", "n1", "--journal", str(folder / "n1.db")],
        "cluster-injector": [
            *py,
            "chaosbus.injector",
            "--cluster",
            "--kubeconfig",
            str(answered),
            "--journal",
            str(folder / "cluster.db"),
        ],
        "auth": [*py, "chaosbus.authcallout", "--issuer-seed", str(seed), "--kubeconfig", str(answered)],
    }


def observe(ports: dict[str, int], wanted: int, within_s: float) -> dict[str, tuple[int, str]]:
    """Each service's first answer that is `wanted` (else its last one), polled until all are."""
    seen: dict[str, tuple[int, str]] = {}
    deadline = time.monotonic() + within_s
    while True:
        for name, port in ports.items():
            if seen.get(name, (None,))[0] != wanted:
                seen[name] = readyz(port)
        if all(s[0] == wanted for s in seen.values()) or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, tuple[int, str]]]]:
    """service -> phase ("up", "away", "still" away, "back") -> its /readyz answer then."""
    folder = tmp_path_factory.mktemp("readyz")
    store = folder / "nats"
    server = natsserver.start(store)
    env = {**os.environ, "CHAOSBUS_UNSIGNED": "1", "CHAOSBUS_STATE_DIR": str(folder / "state")}
    env.pop("CHAOSBUS_NATS_CREDS", None)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    api = FakeApiServer().start()
    try:
        for name, argv in argvs(server.url, folder, api).items():
            ports[name] = free_port()
            argv += ["--nats", server.url, "--metrics-port", str(ports[name])]
            with open(folder / f"{name}.log", "wb") as log:
                procs[name] = subprocess.Popen(argv, stdout=log, stderr=log, env=env, start_new_session=True)
        seen: dict[str, dict[str, tuple[int, str]]] = {name: {} for name in procs}
        for name, answer in observe(ports, 200, UP_WITHIN_S).items():
            seen[name]["up"] = answer
        server.stop()
        for name, answer in observe(ports, 503, AWAY_WITHIN_S).items():
            seen[name]["away"] = answer
        for name, port in ports.items():  # a second look: unready for the outage, not for a blink
            seen[name]["still"] = readyz(port)
        server = natsserver.start(store, port=server.port)
        for name, answer in observe(ports, 200, UP_WITHIN_S).items():
            seen[name]["back"] = answer
        for name, p in procs.items():
            if p.poll() is not None:
                seen[name]["back"] = (0, f"exited with {p.returncode}: {(folder / f'{name}.log').read_text()[-2000:]}")
        yield seen
    finally:
        stop_groups(*procs.values())
        server.stop()
        api.close()


@pytest.mark.parametrize(
    "service", ["watcher", "scheduler", "second-scheduler", "recorder", "injector", "cluster-injector", "auth"]
)
def test_readyz_follows_the_nats_connection(outage: dict[str, dict[str, tuple[int, str]]], service: str) -> None:
    seen = outage[service]
    assert seen["up"][0] == 200, f"not ready with NATS up: {seen['up']}"
    assert seen["away"][0] == 503, f"not unready with nats-server stopped: {seen['away']}"
    assert "NATS" in seen["away"][1], seen["away"]
    assert seen["still"][0] == 503, f"ready again with nats-server still stopped: {seen['still']}"
    assert seen["back"][0] == 200, f"not ready again with NATS back: {seen['back']}"
