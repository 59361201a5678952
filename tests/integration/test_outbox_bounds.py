"""The injector's results stay within what NATS carries, and nothing in its outbox blocks the rest:
a Task printing 5 MB (asking for all of it) comes back with its stdout capped, a result NATS
still refuses goes with its outputs cut, and a row that can never be sent is set aside in the
journal while the results behind it flow. Real nats-server, real journal, real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers.signing import TRUST, publish_command
from unit.injector.factories import Recording, command

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, subjects
from chaosbus.common.faultspecs import MAX_STDOUT
from chaosbus.injector import core, faults
from chaosbus.injector.app import Edge
from chaosbus.injector.executor import Executor
from chaosbus.injector.faults.task import TaskFault
from chaosbus.injector.journal import Journal, Report
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
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.db")
    yield j
    j.close()


@contextlib.asynccontextmanager
async def injector(journal: Journal, url: str) -> AsyncIterator[busmod.Bus]:
    registry: dict[str, faults.Fault] = {}
    for f in (Recording(), TaskFault()):
        faults.register(f, registry)
    node = Node(journal, Executor(journal, "n1", registry=registry))
    runner = asyncio.ensure_future(Edge(node, "n1", InjectorMetrics(), trust=TRUST).run(url))
    bus = await busmod.connect(url, "test")
    await bus.ensure()
    try:
        yield bus
    finally:
        runner.cancel()
        await asyncio.wait([runner], timeout=5)
        await bus.close()
        node.close()


async def results(bus: busmod.Bus, count: int, within: float = 15.0) -> list[m.ResultBatch]:
    deadline = time.monotonic() + within
    while (info := await bus.js.stream_info(subjects.RESULTS.name)).state.messages < count:
        assert time.monotonic() < deadline, f"{info.state.messages} of {count} result batches"
        await asyncio.sleep(0.05)
    return [
        busmod.decode((await bus.js.get_msg(subjects.RESULTS.name, seq)).data or b"", m.ResultBatch)
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


def task_command(argv: list[str], max_stdout: int) -> m.NodeCommand:
    action = m.TargetAction(
        target_id="ns/task-abcde", op="apply", fault=m.Task(argv=argv, timeout_s=30, max_stdout=max_stdout)
    )
    return m.NodeCommand(
        command_id="wfnode.task.1",
        experiment_uid="wfnode",
        generation=1,
        kind="WorkflowNode",
        namespace="ns",
        name="task-abcde",
        node="n1",
        issued_at=time.time(),
        actions=[action],
    )


async def test_huge_task_output_is_capped_and_a_row_never_sendable_blocks_nothing(
    journal: Journal, nats_server: natsserver.EmbeddedServer, sleeper: subprocess.Popen[bytes]
) -> None:
    # A row that no NATS server will take (2 MB, and no result batch to cut), first in line.
    journal.commit([], reports=[Report(subjects.result_subject("n1", "old"), "old.1", b"x" * (2 << 20))])
    async with injector(journal, nats_server.url) as bus:
        task = task_command(
            [sys.executable, "-c", "import sys; sys.stdout.write('y' * 5_000_000)"], max_stdout=100_000_000
        )
        await publish_command(bus, task)
        [first] = await results(bus, 1)
        assert first.command_id == task.command_id
        [r] = first.results
        assert r.ok and r.exit_code == 0 and r.stdout == "y" * MAX_STDOUT
        later = command(sleeper)
        await publish_command(bus, later)
        done = await results(bus, 2)
        assert [b.command_id for b in done] == [task.command_id, later.command_id]
        assert done[1].results[0].ok
    assert journal.outbox() == []
    assert journal.set_aside() == [(1, "larger than NATS max_payload")]


def test_a_result_batch_over_max_payload_is_cut_to_fit() -> None:
    big = m.ResultBatch(
        command_id="c",
        experiment_uid="u",
        generation=1,
        kind="WorkflowNode",
        namespace="ns",
        name="t",
        node="n1",
        results=[
            m.TargetResult(target_id=f"ns/t{i}", op="apply", ok=True, stdout="z" * MAX_STDOUT, message="m" * 9000)
            for i in range(20)
        ],
    )
    payload = busmod.encode(big)
    assert len(payload) > 1024 * 1024
    smaller = core.shrunk(payload, 64 * 1024)
    assert smaller is not None and len(smaller) <= 64 * 1024
    cut = busmod.decode(smaller, m.ResultBatch)
    assert [r.target_id for r in cut.results] == [r.target_id for r in big.results]
    assert all(len(r.stdout) == 1024 and r.message.endswith("larger than NATS max_payload)") for r in cut.results)
    assert core.shrunk(b"not a batch", 64 * 1024) is None
