"""Runtime adapters against real servers on real unix sockets: the in-repo fake CRI runtime (a
grpcio server) and fake Docker Engine (an HTTP/1.1 server), each standing in for containers with
real child processes. Resolution gives the real pid and netns; container-kill goes through the
runtime and the process is gone; a missing socket, a silent runtime and malformed replies are
per-target errors, never crashes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakecri import FakeCri, FakeDocker, runtime_sockets, runtimes

from chaosbus.common import messages as m
from chaosbus.common import settings
from chaosbus.common.netns import netns_inode
from chaosbus.injector import core, faults, flags, runtime
from chaosbus.injector.backends import criwire, procs
from chaosbus.injector.backends.containers import Breaker, RuntimeCallError

CID = "0123456789abcdef" * 4  # the shape of containerd, CRI-O and Docker ids


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Not tmp_path: a unix socket path must fit in 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="cbrt", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fakes(sock_dir: Path) -> Iterator[tuple[FakeCri, FakeDocker]]:
    with runtimes(sock_dir) as (cri, docker):
        with runtime_sockets(cri.socket_path, cri.socket_path, docker.socket_path, timeout=2.0):
            yield cri, docker


def ctx_for(ids: list[str], spec: m.FaultSpec) -> faults.FaultContext:
    action = m.TargetAction(
        target_id="default/web-0", op="apply", namespace="default", pod_name="web-0", container_ids=ids, fault=spec
    )
    return faults.FaultContext(
        experiment_uid="u",
        experiment_name="x",
        namespace="default",
        action=action,
        containers=[runtime.resolve(i) for i in ids],
    )


@pytest.mark.parametrize("scheme", ["containerd", "cri-o", "docker"])
def test_resolve_gives_the_real_pid_and_its_netns(fakes: tuple[FakeCri, FakeDocker], scheme: str) -> None:
    cri, docker = fakes
    pid = (docker if scheme == "docker" else cri).containers.start(CID)
    handle = runtime.resolve(f"{scheme}://{CID}")
    assert handle.alive and handle.pid == pid
    assert netns_inode(handle.netns_path) == netns_inode(f"/proc/{pid}/ns/net")
    assert handle.mnt_ns_path == f"/proc/{pid}/ns/mnt"
    calls = (docker if scheme == "docker" else cri).containers.calls
    assert calls == [("inspect" if scheme == "docker" else "ContainerStatus", CID)]


@pytest.mark.parametrize("scheme", ["containerd", "docker"])
def test_container_kill_goes_through_the_runtime(fakes: tuple[FakeCri, FakeDocker], scheme: str) -> None:
    cri, docker = fakes
    fake = docker if scheme == "docker" else cri
    pid = fake.containers.start(CID)
    spared = fake.containers.start("f" * 64)
    spec = m.ContainerKill(container_names=["app"])
    message = faults.get("container-kill").apply(ctx_for([f"{scheme}://{CID}"], spec), spec)
    assert message == "killed 1 container(s) through the runtime"
    assert not procs.process_alive(pid) and procs.process_alive(spared)
    assert fake.containers.kills() == [CID]  # the kill arrived through the runtime's API
    if scheme == "docker":
        assert docker.signals == ["KILL"]
    else:
        assert cri.stop_timeouts == [0]  # "forcibly terminate the container immediately"
    again = ctx_for([f"{scheme}://{CID}"], spec)
    assert again.containers[0].alive is False  # exited: the target is gone
    assert faults.get("container-kill").apply(again, spec).startswith("target gone")


def test_unknown_container_is_a_gone_target(fakes: tuple[FakeCri, FakeDocker]) -> None:
    for scheme in ("containerd", "docker"):
        handle = runtime.resolve(f"{scheme}://{CID}")
        assert handle.alive is False and handle.pid == 0


def test_missing_socket_is_a_clear_non_retryable_per_target_error(sock_dir: Path) -> None:
    missing = sock_dir / "nope.sock"
    with runtime_sockets(missing, missing, missing):
        for scheme in runtime.KNOWN_RUNTIMES:
            with pytest.raises(runtime.UnsupportedRuntime) as err:
                runtime.resolve(f"{scheme}://{CID}")
            assert f"socket {missing} does not exist" in str(err.value) and not err.value.retryable
        cmd = m.NodeCommand(
            command_id="c",
            experiment_uid="u",
            generation=1,
            kind="PodChaos",
            namespace="default",
            name="x",
            node="n1",
            issued_at=time.time(),
            deadline=None,
            actions=[
                m.TargetAction(
                    target_id="default/web-0",
                    op="apply",
                    container_ids=[f"containerd://{CID}"],
                    fault=m.ContainerKill(container_names=["app"]),
                )
            ],
        )
        res = core.run_action(cmd, cmd.actions[0])
        assert not res.ok and not res.retryable and str(missing) in res.message


def test_a_file_that_is_not_a_socket_is_refused(sock_dir: Path) -> None:
    plain = sock_dir / "plain"
    plain.write_text("")
    with runtime_sockets(plain, plain, plain), pytest.raises(runtime.UnsupportedRuntime, match="is not a unix socket"):
        runtime.resolve(f"docker://{CID}")


@contextlib.contextmanager
def silent_socket(path: Path) -> Iterator[socket.socket]:
    """A unix socket that accepts connections (the kernel's backlog) and never answers."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(16)
    try:
        yield srv
    finally:
        srv.close()


@pytest.mark.parametrize("scheme", ["containerd", "docker"])
def test_a_silent_runtime_costs_one_timeout_and_is_retryable(sock_dir: Path, scheme: str) -> None:
    path = sock_dir / "silent.sock"
    with silent_socket(path):
        with runtime_sockets(path, path, path, timeout=0.5):
            started = time.monotonic()
            with pytest.raises(runtime.UnsupportedRuntime) as err:
                runtime.resolve(f"{scheme}://{CID}")
            took = time.monotonic() - started
    assert err.value.retryable and str(path) in str(err.value)
    assert 0.4 <= took < 3.0, f"{scheme} call took {took:.2f}s against a 0.5 s deadline"


def test_a_hung_runtime_costs_a_command_one_timeout_not_one_per_target(sock_dir: Path) -> None:
    path = sock_dir / "silent.sock"
    with silent_socket(path):
        with runtime_sockets(path, path, path, timeout=0.5):
            started = time.monotonic()
            errors = []
            for i in range(50):
                with pytest.raises(runtime.UnsupportedRuntime) as err:
                    runtime.resolve(f"containerd://{i:064x}")
                errors.append(err.value)
            took = time.monotonic() - started
    assert all(e.retryable for e in errors)
    assert "not asked again for" in str(errors[-1]) and "DEADLINE_EXCEEDED" in str(errors[-1])
    print(f"\n50 targets on a hung runtime (0.5 s deadline): {took:.2f}s")
    assert took < 2.0, f"50 targets on a hung runtime took {took:.2f}s (one 0.5 s deadline expected)"


def test_the_breaker_reopens_after_its_cooldown_and_closes_on_success() -> None:
    now = [0.0]
    breaker = Breaker(5.0, clock=lambda: now[0])
    calls = []

    def hung() -> int:
        calls.append("hung")
        raise RuntimeCallError("timed out", retryable=True)

    with pytest.raises(RuntimeCallError):
        breaker.call(hung)
    now[0] = 4.9
    with pytest.raises(RuntimeCallError, match=r"timed out \(not asked again for 0.1s\)"):
        breaker.call(lambda: 1)
    now[0] = 5.0
    assert breaker.call(lambda: 7) == 7 and calls == ["hung"]
    with pytest.raises(RuntimeCallError, match="bad reply"):  # not retryable: does not open the breaker
        breaker.call(lambda: (_ for _ in ()).throw(RuntimeCallError("bad reply")))
    assert breaker.call(lambda: 8) == 8


MALFORMED_CRI = {
    "truncated": (b"\x0a\x05ab", "ContainerStatus reply for .* is malformed: .*runs past the end"),
    "info not json": (
        criwire.encode_status_reply(criwire.StatusReply(CID, criwire.CONTAINER_RUNNING, 0, {"info": "{pid: 1"})),
        "is not JSON",
    ),
    "no info": (
        criwire.encode_status_reply(criwire.StatusReply(CID, criwire.CONTAINER_RUNNING)),
        r"no verbose info\[\"info\"\]",
    ),
    "pid not a number": (
        criwire.encode_status_reply(
            criwire.StatusReply(CID, criwire.CONTAINER_RUNNING, 0, {"info": json.dumps({"pid": "12"})})
        ),
        "pid must be a non-negative integer",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_CRI))
def test_malformed_cri_replies_are_errors(fakes: tuple[FakeCri, FakeDocker], case: str) -> None:
    cri, _ = fakes
    raw, error = MALFORMED_CRI[case]
    cri.containers.reply_override[CID] = raw
    with pytest.raises(runtime.UnsupportedRuntime, match=error) as err:
        runtime.resolve(f"containerd://{CID}")
    assert not err.value.retryable
    assert runtime.resolve(f"containerd://{'e' * 64}").alive is False  # the runtime and adapter still work


MALFORMED_DOCKER = {
    "not json": (b"<html>", "reply is not JSON"),
    "no state": (b'{"Id": "x"}', "no State.Running"),
    "pid not a number": (b'{"State": {"Running": true, "Pid": -3}}', "State.Pid must be a non-negative integer"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_DOCKER))
def test_malformed_docker_replies_are_errors(fakes: tuple[FakeCri, FakeDocker], case: str) -> None:
    _, docker = fakes
    raw, error = MALFORMED_DOCKER[case]
    docker.containers.reply_override[CID] = raw
    with pytest.raises(runtime.UnsupportedRuntime, match=error):
        runtime.resolve(f"docker://{CID}")


def test_a_pid_this_injector_cannot_see_names_host_pid(fakes: tuple[FakeCri, FakeDocker]) -> None:
    cri, _ = fakes
    invisible = 4_000_000  # above the kernel's pid_max: no such process here
    cri.containers.reply_override[CID] = criwire.encode_status_reply(
        criwire.StatusReply(CID, criwire.CONTAINER_RUNNING, 0, {"info": json.dumps({"pid": invisible})})
    )
    with pytest.raises(runtime.UnsupportedRuntime, match="hostPID") as err:
        runtime.resolve(f"containerd://{CID}")
    assert err.value.retryable


@pytest.mark.parametrize("bad", ["containerd://../../v1.41/containers/x", "docker://a b", "cri-o://" + "a" * 129])
def test_ids_that_are_not_runtime_ids_are_refused_before_any_call(fakes: tuple[FakeCri, FakeDocker], bad: str) -> None:
    cri, docker = fakes
    with pytest.raises(runtime.UnsupportedRuntime, match="must be letters, digits"):
        runtime.resolve(bad)
    assert cri.containers.calls == [] and docker.containers.calls == []


def test_sockets_come_from_flags_then_environment_then_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSBUS_CRIO_SOCKET", "/env/crio.sock")
    monkeypatch.setenv("CHAOSBUS_RUNTIME_TIMEOUT", "0.75")
    cfg = runtime.config_from_env(containerd="/flag/containerd.sock")
    assert cfg.sockets == {
        "containerd": "/flag/containerd.sock",
        "cri-o": "/env/crio.sock",
        "docker": "/var/run/docker.sock",
    }
    assert cfg.timeout == 0.75
    monkeypatch.delenv("CHAOSBUS_CRIO_SOCKET")
    settings.reset()  # a process reads its settings once; this test plays a second process
    assert runtime.config_from_env().sockets["cri-o"] == "/var/run/crio/crio.sock"
    with pytest.raises(ValueError, match="runtime timeout must be > 0"):
        runtime.config_from_env(timeout=0)


def test_injector_flags_pick_the_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSBUS_DOCKER_SOCKET", "/env/docker.sock")
    parser = argparse.ArgumentParser()
    flags.add_arguments(parser)
    args = parser.parse_args(
        [
            "--containerd-socket",
            "/run/k3s/containerd/containerd.sock",
            "--crio-socket",
            "/host/crio.sock",
            "--runtime-timeout",
            "1.5",
        ]
    )
    cfg = flags.runtime_config(args)
    assert cfg.sockets == {
        "containerd": "/run/k3s/containerd/containerd.sock",
        "cri-o": "/host/crio.sock",
        "docker": "/env/docker.sock",
    }
    assert cfg.timeout == 1.5


def test_fakes_leave_no_process_behind(sock_dir: Path) -> None:
    with runtimes(sock_dir) as (cri, docker):
        pids = [cri.containers.start("a" * 64), docker.containers.start("b" * 64)]
    assert not any(procs.process_alive(p) for p in pids)
    assert not os.path.exists(cri.socket_path) and not os.path.exists(docker.socket_path)
