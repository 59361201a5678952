"""The CRI adapter against a real containerd (Debian's 1.6 package, a private daemon in a temp
dir): a container started through the CRI as a kubelet would (busybox-static image built in the
test) resolves to its real PID, container-kill stops it through containerd, and in a pod with
its own network (CNI ptp) a partition lands in the sandbox netns containerd named in
/var/run/netns and cuts the pod's real traffic. Skips, saying why, without root, containerd,
runc, busybox-static or (the partition) Debian's containernetworking-plugins.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakecri import realctd, runtime_sockets

from chaosbus.cli import podnet
from chaosbus.common import messages as m
from chaosbus.common.messages import Partition, PartitionRule
from chaosbus.common.netns import netns_inode
from chaosbus.injector import faults, runtime
from chaosbus.injector.backends import nft, procs
from chaosbus.injector.faults.partition import table_name

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
            with runtime_sockets(daemon.socket, daemon.socket, root / "no-docker.sock"):
                yield daemon
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pod(ctd: realctd.Containerd, request: pytest.FixtureRequest) -> Iterator[str]:
    """A running container (`sleep 600`) in a new pod; the pod is removed afterwards."""
    sandbox_id, container_id = ctd.run_container(
        request.node.name[:40].replace("[", "-").strip("]"), ["/bin/sleep", "600"]
    )
    try:
        yield container_id
    finally:
        ctd.remove_sandbox(sandbox_id)


def test_a_real_containerd_container_resolves_to_its_process(pod: str) -> None:
    handle = runtime.resolve(f"containerd://{pod}")
    assert handle.alive and handle.pid > 1
    # runc's StartContainer returns once init is told to exec, so the exec may still be under way:
    # the command line is empty until the new image is in place.
    deadline = time.monotonic() + 10
    while True:
        with open(f"/proc/{handle.pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")[:2]
        if argv != [b""] or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert argv == [b"/bin/sleep", b"600"]
    assert netns_inode(handle.netns_path) == netns_inode(f"/proc/{handle.pid}/ns/net")
    assert runtime.resolve(f"cri-o://{pod}").pid == handle.pid  # same CRI, either scheme


def test_container_kill_stops_a_real_containerd_container(pod: str) -> None:
    spec = m.ContainerKill(container_names=["app"])
    action = m.TargetAction(target_id="default/web-0", op="apply", container_ids=[f"containerd://{pod}"], fault=spec)
    ctx = faults.FaultContext(
        experiment_uid="u",
        experiment_name="x",
        namespace="default",
        action=action,
        containers=[runtime.resolve(f"containerd://{pod}")],
    )
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


CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5).close()
    print("connected")
except OSError as e:
    print(type(e).__name__)
"""


def connect_from(netns_path: str, ip: str, port: int) -> str:
    proc = podnet.spawn_in_netns(
        [sys.executable, "-c", CONNECT, ip, str(port)], netns_path, stdout=subprocess.PIPE, text=True
    )
    out, _ = proc.communicate(timeout=10)
    return out.strip()


def default_gateway(netns_name: str) -> str:
    routes = json.loads(
        subprocess.run(
            ["ip", "-n", netns_name, "-j", "-4", "route", "show", "default"], check=True, capture_output=True, text=True
        ).stdout
    )
    return str(routes[0]["gateway"])


def test_a_partition_of_a_real_containerd_pod_acts_in_its_cni_netns(ctd: realctd.Containerd) -> None:
    why = realctd.missing_cni()
    if why is not None:
        print(f"skipping: {why}")
        pytest.skip(why)
    sandbox_id, container_id = ctd.run_container("partitioned", ["/bin/sleep", "600"], host_network=False)
    server = socket.create_server(("0.0.0.0", 0))  # on the host: the pod reaches it via its gateway
    try:
        handle = runtime.resolve(f"containerd://{container_id}")
        # containerd names the pod's sandbox netns in /var/run/netns; faults address it, not /proc/<pid>.
        assert handle.netns_path.startswith("/var/run/netns/cni-")
        assert (
            netns_inode(handle.netns_path)
            == netns_inode(f"/proc/{handle.pid}/ns/net")
            != netns_inode("/proc/self/ns/net")
        )
        gateway, port = default_gateway(os.path.basename(handle.netns_path)), server.getsockname()[1]
        assert connect_from(handle.netns_path, gateway, port) == "connected"
        spec = Partition(rules=[PartitionRule(chain="output", peers=[gateway])])
        action = m.TargetAction(
            target_id="default/partitioned", op="apply", container_ids=[f"containerd://{container_id}"], fault=spec
        )
        ctx = faults.FaultContext(
            experiment_uid="realctd", experiment_name="x", namespace="default", action=action, containers=[handle]
        )
        fault = faults.get("partition")
        try:
            fault.apply(ctx, spec)
            assert table_name("realctd", ".") in nft.list_tables(handle.netns_path)
            assert connect_from(handle.netns_path, gateway, port) == "TimeoutError"
        finally:
            fault.recover(ctx, spec)
        assert connect_from(handle.netns_path, gateway, port) == "connected"
    finally:
        server.close()
        ctd.remove_sandbox(sandbox_id)
    assert not os.path.exists(handle.netns_path)  # the runtime removed its sandbox netns
