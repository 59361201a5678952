"""A node injector end to end with runtime ids: NodeCommands on the node's durable consumer (real
nats-server) name containers by `containerd://` id; the injector resolves them through the
in-repo fake CRI runtime (a real grpcio server whose containers are real processes), kills through
the runtime, and reports per target on the results stream, including a runtime whose socket is
absent. No root needed: container-kill only signals our own children.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fakecri import FakeCri, FakeDocker, runtime_sockets, runtimes
from helpers.signing import TRUST, publish_command
from integration.test_injector_edge import batches

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver
from chaosbus.injector.app import Edge
from chaosbus.injector.backends import procs
from chaosbus.injector.executor import Executor
from chaosbus.injector.journal import Journal
from chaosbus.injector.metrics import InjectorMetrics
from chaosbus.injector.node import Node

pytestmark = pytest.mark.integration


@pytest.fixture
def fakes() -> Iterator[tuple[FakeCri, FakeDocker]]:
    tmp = Path(tempfile.mkdtemp(prefix="cbrt", dir="/tmp"))
    try:
        with runtimes(tmp) as (cri, docker):
            with runtime_sockets(cri.socket_path, tmp / "absent-crio.sock", docker.socket_path):
                yield cri, docker
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
async def node_bus(tmp_path: Path, nats_server: natsserver.EmbeddedServer) -> AsyncIterator[busmod.Bus]:
    journal = Journal(tmp_path / "journal.db")
    node = Node(journal, Executor(journal, "n1"), lease_ttl=15.0)  # the real fault registry
    edge = Edge(node, "n1", InjectorMetrics(), trust=TRUST)
    tasks = [asyncio.ensure_future(node.watchdog()), asyncio.ensure_future(edge.run(nats_server.url))]
    bus = await busmod.connect(nats_server.url, "test")
    await bus.ensure()
    try:
        yield bus
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=5)
        await bus.close()
        node.close()
        journal.close()


def kill_command(*targets: tuple[str, str]) -> m.NodeCommand:
    actions = [
        m.TargetAction(
            target_id=tid,
            op="apply",
            namespace="default",
            pod_name=tid.split("/")[1],
            pod_uid=f"uid-{tid}",
            container_ids=[cid],
            fault=m.ContainerKill(container_names=["app"]),
        )
        for tid, cid in targets
    ]
    return m.NodeCommand(
        command_id=f"ck.{time.monotonic_ns()}",
        experiment_uid="exp-ck",
        generation=1,
        kind="PodChaos",
        namespace="default",
        name="ck",
        node="n1",
        issued_at=time.time(),
        deadline=None,
        actions=actions,
    )


async def test_a_node_command_with_runtime_ids_kills_through_the_runtime(
    fakes: tuple[FakeCri, FakeDocker], node_bus: busmod.Bus
) -> None:
    cri, _ = fakes
    victim, bystander = "a1" * 32, "b2" * 32
    pid = cri.containers.start(victim)
    spared = cri.containers.start(bystander)
    cmd = kill_command(("default/web-0", f"containerd://{victim}"), ("default/web-1", f"cri-o://{bystander}"))
    started = time.monotonic()
    await publish_command(node_bus, cmd)
    [batch] = await batches(node_bus, within=10.0)
    took = time.monotonic() - started
    by_target = {r.target_id: r for r in batch.results}
    killed, unreachable = by_target["default/web-0"], by_target["default/web-1"]
    assert killed.ok and killed.message == "killed 1 container(s) through the runtime"
    assert not procs.process_alive(pid) and cri.containers.kills() == [victim]
    assert not unreachable.ok and not unreachable.retryable
    assert "absent-crio.sock does not exist" in unreachable.message
    assert procs.process_alive(spared)  # its runtime was unreachable: untouched
    print(f"\ncommand -> result batch through NATS and the fake CRI runtime: {took * 1000:.0f} ms")
