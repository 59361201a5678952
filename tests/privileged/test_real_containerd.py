"""The CRI adapter against a real containerd (Debian's 1.6 package, a private daemon in a temp
dir): a container started through the CRI as a kubelet would (host-network pod, busybox-static
image built in the test) resolves to its real PID, and container-kill stops it through
containerd. Skips, saying why, without root, containerd, runc or busybox-static.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakecri import realctd

from chaosbus.common import messages as m
from chaosbus.common.netns import netns_inode
from chaosbus.injector import faults, runtime
from chaosbus.injector.backends import procs

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module")
def ctd() -> Iterator[realctd.Containerd]:
    why = realctd.missing()
    if why is not None:
        print(f"skipping the real containerd tests: {why}")
        pytest.skip(f"needs a real containerd: {why}")
    root = Path(tempfile.mkdtemp(prefix="cbctd", dir="/tmp"))
    try:
        with realctd.containerd(root) as daemon:
            runtime.configure(runtime.RuntimeConfig(sockets={"containerd": str(daemon.socket),
                                                             "cri-o": str(daemon.socket),
                                                             "docker": str(root / "no-docker.sock")}))
            try:
                yield daemon
            finally:
                runtime.configure(runtime.config_from_env())
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pod(ctd: realctd.Containerd, request: pytest.FixtureRequest) -> Iterator[str]:
    """A running container (`sleep 600`) in a new pod; the pod is removed afterwards."""
    sandbox_id, container_id = ctd.run_container(request.node.name[:40].replace("[", "-").strip("]"),
                                                 ["/bin/sleep", "600"])
    try:
        yield container_id
    finally:
        ctd.remove_sandbox(sandbox_id)


def test_a_real_containerd_container_resolves_to_its_process(pod: str) -> None:
    handle = runtime.resolve(f"containerd://{pod}")
    assert handle.alive and handle.pid > 1
    with open(f"/proc/{handle.pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[:2] == [b"/bin/sleep", b"600"]
    assert netns_inode(handle.netns_path) == netns_inode(f"/proc/{handle.pid}/ns/net")
    assert runtime.resolve(f"cri-o://{pod}").pid == handle.pid  # same CRI, either scheme


def test_container_kill_stops_a_real_containerd_container(pod: str) -> None:
    spec = m.ContainerKill(container_names=["app"])
    action = m.TargetAction(target_id="default/web-0", op="apply", container_ids=[f"containerd://{pod}"], fault=spec)
    ctx = faults.FaultContext(experiment_uid="u", experiment_name="x", namespace="default", action=action,
                              containers=[runtime.resolve(f"containerd://{pod}")])
    pid = ctx.containers[0].pid
    started = time.monotonic()
    message = faults.get("container-kill").apply(ctx, spec)
    took = time.monotonic() - started
    print(f"\ncontainer-kill through a real containerd (StopContainer timeout 0): {took * 1000:.0f} ms")
    assert message == "killed 1 container(s) through the runtime"
    assert not procs.process_alive(pid)
    after = runtime.resolve(f"containerd://{pod}")
    assert after.alive is False  # containerd reports it exited


def test_an_unknown_id_is_a_gone_target_on_a_real_containerd(ctd: realctd.Containerd) -> None:
    assert runtime.resolve(f"containerd://{'0' * 64}").alive is False
