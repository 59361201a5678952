"""The injector's NATS edge against a real nats-server (port 0, JetStream in a temp dir): commands
from the node's durable consumer, results through the journal's outbox (kept while NATS is down,
published in order once it is back), a duplicate command delivered twice, the kill switch read
from the KV key alone, leases on the core subject, and a long Workflow Task that holds up no other
command. The fault is the recording fault of the node unit tests, so no root is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.signing import TRUST, publish_command, publish_lease, put_halt
from unit.injector.factories import Recording, command, eventually, make_node

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, subjects
from chaosbus.injector import faults
from chaosbus.injector.app import COMMAND_ACK_WAIT_S, Edge
from chaosbus.injector.executor import Executor
from chaosbus.injector.faults.task import TaskFault
from chaosbus.injector.journal import Journal
from chaosbus.injector.metrics import InjectorMetrics
from chaosbus.injector.node import Node

pytestmark = pytest.mark.integration


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def fault() -> Recording:
    return Recording()


@pytest.fixture
async def running(
    tmp_path: Path, fault: Recording, nats_server: natsserver.EmbeddedServer, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Node, busmod.Bus]]:
    # A 1 s lease, for the lease tests; a test about another way a fault ends asks for a long one
    # (indirect parameter), or a loaded machine lets the lease end the fault first.
    node = make_node(tmp_path, fault, lease_ttl=getattr(request, "param", 1.0))
    edge = Edge(node, "n1", InjectorMetrics(), trust=TRUST)
    tasks = [asyncio.ensure_future(node.watchdog()), asyncio.ensure_future(edge.run(nats_server.url))]
    bus = await busmod.connect(nats_server.url, "test")
    await bus.ensure()
    try:
        yield node, bus
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=5)
        await bus.close()
        node.close()
        node.journal.close()


async def batches(bus: busmod.Bus, within: float = 5.0, *, count: int = 1) -> list[m.ResultBatch]:
    deadline = time.monotonic() + within
    while True:
        info = await bus.js.stream_info(subjects.RESULTS.name)
        if info.state.messages >= count or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(Exception):
            out.append(busmod.decode((await bus.js.get_msg(subjects.RESULTS.name, seq)).data or b"", m.ResultBatch))
    return out


async def test_a_connection_closed_for_good_is_replaced_by_a_new_one(
    tmp_path: Path, fault: Recording, nats_server: natsserver.EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nats-py closes a connection for good after some refusals (an auth callout answering too late
    # while the auth service starts): the injector must not sit on it, looking alive.
    made: list[busmod.Bus] = []
    real_connect = busmod.connect

    async def connect(*args: Any, **kwargs: Any) -> busmod.Bus:
        made.append(await real_connect(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(busmod, "connect", connect)
    node = make_node(tmp_path, fault, lease_ttl=60.0)
    runner = asyncio.ensure_future(Edge(node, "n1", InjectorMetrics(), trust=TRUST).run(nats_server.url))
    try:
        await eventually(lambda: node.connected, within=20)
        await made[0].nc.close()
        await eventually(lambda: len(made) == 2 and node.connected, within=20)
    finally:
        runner.cancel()
        await asyncio.wait([runner], timeout=5)
        for b in made:
            await b.close()
        node.close()
        node.journal.close()


async def test_a_command_yields_its_results_on_the_stream(
    running: tuple[Node, busmod.Bus], fault: Recording, sleeper: subprocess.Popen[bytes]
) -> None:
    _, bus = running
    cmd = command(sleeper)
    await publish_command(bus, cmd)
    [batch] = await batches(bus)
    assert batch.command_id == cmd.command_id and batch.results[0].ok and len(fault.kernel) == 1


async def test_a_command_delivered_twice_is_executed_once(
    running: tuple[Node, busmod.Bus], fault: Recording, sleeper: subprocess.Popen[bytes]
) -> None:
    _, bus = running
    cmd = command(sleeper)
    for msg_id in ("first", "second"):  # past JetStream's dedup: two deliveries of one command
        await publish_command(bus, cmd, msg_id=msg_id)
    await batches(bus)
    await asyncio.sleep(0.5)  # time for the second delivery to be handled (and ignored)
    assert fault.applies == 1 and len(await batches(bus)) == 1
    assert (await bus.js.stream_info(subjects.COMMANDS.name)).state.messages == 0  # both acked


@pytest.mark.parametrize("running", [60.0], indirect=True)
async def test_the_kv_key_alone_halts_the_node(
    running: tuple[Node, busmod.Bus], fault: Recording, sleeper: subprocess.Popen[bytes]
) -> None:
    node, bus = running
    cmd = command(sleeper)
    await publish_command(bus, cmd)
    await batches(bus)
    await put_halt(bus, m.HaltState(halted=True, reason="kv only", at=time.time()))
    await eventually(lambda: not fault.kernel)
    assert node.halt.halted
    [_, halted] = await batches(bus, count=2)
    assert halted.results[0].message == "recovered: halted by kill switch (kv only)"


async def test_leases_on_the_subject_keep_a_fault_and_their_absence_ends_it(
    running: tuple[Node, busmod.Bus], fault: Recording, sleeper: subprocess.Popen[bytes]
) -> None:
    _, bus = running
    cmd = command(sleeper)
    await publish_command(bus, cmd)
    await batches(bus)
    for _ in range(15):  # 1.5 s of renewals against a 1 s lease
        lease = m.NodeLease(node="n1", ttl_s=1.0, held=[cmd.experiment_uid])
        await publish_lease(bus, lease)
        await asyncio.sleep(0.1)
    assert len(fault.kernel) == 1
    [_, ended] = await batches(bus, within=3.0, count=2)
    assert ended.results[0].message == "recovered: control-plane lease expired (the scheduler was silent for 1s)"


async def test_results_wait_in_the_outbox_while_nats_is_down(
    running: tuple[Node, busmod.Bus],
    nats_server: natsserver.EmbeddedServer,
    fault: Recording,
    sleeper: subprocess.Popen[bytes],
) -> None:
    node, bus = running
    cmd = command(sleeper, deadline=None)
    await publish_command(bus, cmd)
    await batches(bus)
    await bus.close()
    nats_server.process.kill()
    nats_server.process.wait()
    await eventually(lambda: not fault.kernel)  # the lease (1 s) ends it with nobody listening
    assert [r.msg_id for r in node.journal.outbox()], "the report waits in the journal"
    restarted = natsserver.start(nats_server.store_dir, port=nats_server.port)
    try:
        again = await busmod.connect(restarted.url, "test-2")
        try:
            found = await batches(again, within=10.0, count=2)
            assert found[-1].results[0].message.startswith("recovered: control-plane lease expired (NATS unreachable")
            assert node.journal.outbox() == []
        finally:
            await again.close()
    finally:
        restarted.stop()


async def test_a_long_task_holds_up_no_other_command(
    tmp_path: Path, fault: Recording, sleeper: subprocess.Popen[bytes], nats_server: natsserver.EmbeddedServer
) -> None:
    journal = Journal(tmp_path / "journal.db")
    registry: dict[str, faults.Fault] = {}
    for f in (fault, TaskFault()):
        faults.register(f, registry)
    node = Node(journal, Executor(journal, "n1", registry=registry))
    edge = Edge(node, "n1", InjectorMetrics(), trust=TRUST)
    runner = asyncio.ensure_future(edge.run(nats_server.url))
    bus = await busmod.connect(nats_server.url, "test")
    await bus.ensure()
    try:
        task = m.Task(argv=[sys.executable, "-c", "import time; time.sleep(3); print('late')"], timeout_s=30)
        long = m.NodeCommand(
            command_id="wfnode-uid.task.1",
            experiment_uid="wfnode-uid",
            generation=1,
            kind="WorkflowNode",
            namespace="ns",
            name="check-abcde",
            node="n1",
            issued_at=time.time(),
            actions=[m.TargetAction(target_id="ns/check-abcde", op="apply", fault=task)],
        )
        await publish_command(bus, long)
        await asyncio.sleep(0.3)  # the task has started
        quick = command(sleeper)
        started = time.monotonic()
        await publish_command(bus, quick)
        [first] = await batches(bus, within=2.5)
        assert first.command_id == quick.command_id and time.monotonic() - started < 2.5, "held up by the task"
        done = await batches(bus, within=10.0, count=2)
        assert [b.command_id for b in done] == [quick.command_id, long.command_id]
        assert done[1].results[0].exit_code == 0 and done[1].results[0].stdout == "late\n"
        await asyncio.sleep(COMMAND_ACK_WAIT_S / 10)
        assert (await bus.js.stream_info(subjects.COMMANDS.name)).state.messages == 0  # both acked, once each
    finally:
        runner.cancel()
        await asyncio.wait([runner], timeout=5)
        await bus.close()
        node.close()
        journal.close()
