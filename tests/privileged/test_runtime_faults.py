"""Faults on containers addressed by runtime ids: the in-repo fake CRI runtime and fake Docker
Engine start the "containers" as real processes inside the lab's pod network namespaces, the
injector resolves `containerd://` / `docker://` ids through them, and the faults act on the real
kernel and processes (TCP connect matrix, SIGKILL through the runtime).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakecri import FakeCri, FakeDocker, runtime_sockets, runtimes

from chaosbus.common.messages import ContainerKill, Partition, PartitionRule, TargetAction
from chaosbus.injector import faults, runtime
from chaosbus.injector.backends import nft, procs
from chaosbus.injector.faults.partition import table_name

from .conftest import PORTS, Lab

pytestmark = pytest.mark.privileged

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def fakes(lab: Lab) -> Iterator[tuple[FakeCri, FakeDocker]]:
    tmp = Path(tempfile.mkdtemp(prefix="cbrt", dir="/tmp"))
    try:
        with runtimes(tmp) as (cri, docker):
            with runtime_sockets(cri.socket_path, cri.socket_path, docker.socket_path):
                yield cri, docker
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def in_pod(lab: Lab, index: int) -> Any:
    return lambda argv: lab.spawn(index, argv)


def ctx_for(uid: str, ids: list[str], spec: Any) -> faults.FaultContext:
    action = TargetAction(
        target_id="default/pod", op="apply", namespace="default", pod_name="pod", container_ids=ids, fault=spec
    )
    return faults.FaultContext(
        experiment_uid=uid,
        experiment_name=uid,
        namespace="default",
        action=action,
        containers=[runtime.resolve(i) for i in ids],
    )


def test_partition_of_a_containerd_container_cuts_its_pods_links(lab: Lab, fakes: tuple[FakeCri, FakeDocker]) -> None:
    cri, _ = fakes
    cid = "c0" * 32
    cri.containers.start(cid, SLEEPER, spawn=in_pod(lab, 0))
    spec = Partition(rules=[PartitionRule(chain="output", peers=[lab.pods[1].ip])])
    ctx = ctx_for("rtpart", [f"containerd://{cid}"], spec)
    assert ctx.containers[0].netns_path == lab.pods[0].net.netns_path  # the pod's sandbox netns
    fault = faults.get("partition")
    try:
        fault.apply(ctx, spec)
        assert table_name("rtpart", ".") in nft.list_tables(lab.pods[0].net.netns_path)
        links = lab.reachable()
        assert (0, 1, PORTS[0]) not in links
        assert (0, 2, PORTS[0]) in links and (2, 1, PORTS[0]) in links
    finally:
        fault.recover(ctx, spec)
    assert lab.reachable() == lab.all_links()


def test_container_kill_through_docker_kills_the_process_in_its_pod(
    lab: Lab, fakes: tuple[FakeCri, FakeDocker]
) -> None:
    _, docker = fakes
    target, bystander = "d1" * 32, "d2" * 32
    pid = docker.containers.start(target, SLEEPER, spawn=in_pod(lab, 2))
    spared = docker.containers.start(bystander, SLEEPER, spawn=in_pod(lab, 2))
    spec = ContainerKill(container_names=["app"])
    message = faults.get("container-kill").apply(ctx_for("rtkill", [f"docker://{target}"], spec), spec)
    assert message == "killed 1 container(s) through the runtime"
    assert not procs.process_alive(pid) and procs.process_alive(spared)
    assert docker.containers.kills() == [target] and docker.signals == ["KILL"]
    assert all(pod.server.poll() is None for pod in lab.pods)  # the pod's other processes live on
