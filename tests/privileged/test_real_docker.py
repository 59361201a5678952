"""The Docker adapter against a real Docker Engine (Debian's docker.io 20.10, a private dockerd in
a temp dir with no bridge and no iptables): a container started through the Engine API resolves
to its real PID, and container-kill kills it through the Engine. Skips, saying why, without root,
dockerd or busybox-static.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakecri import realdocker, runtime_sockets

from chaosbus.common import messages as m
from chaosbus.injector import faults, runtime
from chaosbus.injector.backends import procs

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module")
def engine() -> Iterator[realdocker.Dockerd]:
    why = realdocker.missing()
    if why is not None:
        print(f"skipping the real Docker Engine tests: {why}")
        pytest.skip(f"needs a real Docker Engine: {why}")
    root = Path(tempfile.mkdtemp(prefix="cbdk", dir="/tmp"))
    try:
        with realdocker.dockerd(root) as daemon:
            with runtime_sockets(root / "none.sock", root / "none.sock", daemon.socket):
                yield daemon
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def container(engine: realdocker.Dockerd) -> Iterator[str]:
    cid = engine.run_container(["/bin/sleep", "600"])
    try:
        yield cid
    finally:
        engine.remove(cid)


def test_a_real_docker_container_resolves_to_its_process(container: str) -> None:
    handle = runtime.resolve(f"docker://{container}")
    assert handle.alive and handle.pid > 1
    with open(f"/proc/{handle.pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[:2] == [b"/bin/sleep", b"600"]


def test_container_kill_kills_a_real_docker_container(engine: realdocker.Dockerd, container: str) -> None:
    spec = m.ContainerKill(container_names=["app"])
    action = m.TargetAction(target_id="default/web-0", op="apply", container_ids=[f"docker://{container}"], fault=spec)
    ctx = faults.FaultContext(
        experiment_uid="u",
        experiment_name="x",
        namespace="default",
        action=action,
        containers=[runtime.resolve(f"docker://{container}")],
    )
    pid = ctx.containers[0].pid
    started = time.monotonic()
    assert faults.get("container-kill").apply(ctx, spec) == "killed 1 container(s) through the runtime"
    print(f"\ncontainer-kill through a real Docker Engine: {(time.monotonic() - started) * 1000:.0f} ms")
    assert not procs.process_alive(pid)
    _, doc = engine.call("GET", f"/containers/{container}/json")
    assert doc["State"]["Running"] is False and doc["State"]["ExitCode"] == 137  # SIGKILL, as the Engine saw it
    assert runtime.resolve(f"docker://{container}").alive is False


def test_an_unknown_id_is_a_gone_target_on_a_real_engine(engine: realdocker.Dockerd) -> None:
    assert runtime.resolve(f"docker://{'0' * 64}").alive is False
