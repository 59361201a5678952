"""The node's own machinery without NATS: journaled commands, the kill switch, self-expiry, the
dead-man lease, vanished targets and the start-up reconcile, on a real journal and real processes.
The fault is a small recording fault registered in a fresh registry (its "kernel" is a dict), so
what the node did is visible without root; the real faults are exercised in tests/privileged.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from unit.injector.factories import UID, Kill, Recording, command, eventually, make_node, stop

from chaosbus.common import messages as m
from chaosbus.injector import faults
from chaosbus.injector import journal as jr
from chaosbus.injector import node as node_mod
from chaosbus.injector.node import Node


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
async def node(tmp_path: Path, fault: Recording) -> AsyncIterator[Node]:
    n = make_node(tmp_path, fault)
    yield n
    await stop(n)


def reports(n: Node) -> list[m.ResultBatch]:
    return [msgspec.json.decode(r.payload, type=m.ResultBatch) for r in n.journal.outbox()]


async def test_an_apply_is_journaled_active_and_its_result_queued(
    node: Node, fault: Recording, sleeper: subprocess.Popen[bytes]
) -> None:
    batch = await node.on_command(command(sleeper))
    assert batch is not None and batch.results[0].ok
    [entry] = node.journal.open_entries()
    assert entry.state == jr.ACTIVE and entry.identity.processes[0].pid == sleeper.pid
    assert len(fault.kernel) == 1
    assert [b.command_id for b in reports(node)] == [batch.command_id]


async def test_a_redelivered_command_changes_nothing(
    node: Node, fault: Recording, sleeper: subprocess.Popen[bytes]
) -> None:
    cmd = command(sleeper)
    await node.on_command(cmd)
    assert await node.on_command(cmd) is None
    assert fault.applies == 1 and len(reports(node)) == 1


async def test_a_repeated_one_shot_is_not_repeated(
    tmp_path: Path, fault: Recording, sleeper: subprocess.Popen[bytes]
) -> None:
    kill = Kill()
    n = make_node(tmp_path, fault, kill=kill)
    try:
        first = await n.on_command(command(sleeper, spec=m.PodKill()))
        again = await n.on_command(command(sleeper, spec=m.PodKill()))  # a new command id: a scheduler re-send
        assert first is not None and again is not None and again.results[0].ok
        assert "not repeat" in again.results[0].message and kill.kills == 1
    finally:
        await stop(n)


async def test_halt_recovers_everything_reports_why_and_refuses_applies(
    node: Node, fault: Recording, sleeper: subprocess.Popen[bytes]
) -> None:
    await node.on_command(command(sleeper))
    await node.on_command(command(sleeper, uid="exp-2"))
    watchdog = asyncio.ensure_future(node.watchdog())
    try:
        started = time.monotonic()
        await node.set_halt(m.HaltState(halted=True, reason="drill", at=time.time()), "test")
        await eventually(lambda: not fault.kernel)
        # Bounded loosely: the kill switch's latency is a `make bench` figure (cli.halt.gone), and
        # a test worker on a loaded machine waits its turn for a core.
        assert time.monotonic() - started < 5.0
        halted = [r for b in reports(node) for r in b.results if r.op == "recover"]
        assert {r.message for r in halted} == {"recovered: halted by kill switch (drill)"}
        refused = await node.on_command(command(sleeper, uid="exp-3"))
        assert refused is not None and "halted by the kill switch" in refused.results[0].message
        assert not refused.results[0].retryable and not fault.kernel
        await node.set_halt(m.HaltState(halted=False, at=time.time(), revision=1), "test")
        again = await node.on_command(command(sleeper))  # ended by the halt: stays ended
        assert again is not None and "already ended" in again.results[0].message
        fresh = await node.on_command(command(sleeper, uid="exp-4"))
        assert fresh is not None and fresh.results[0].ok and len(fault.kernel) == 1
    finally:
        watchdog.cancel()


async def test_a_fault_is_recovered_at_its_deadline_by_the_node(
    node: Node, fault: Recording, sleeper: subprocess.Popen[bytes]
) -> None:
    watchdog = asyncio.ensure_future(node.watchdog())
    try:
        deadline = time.time() + 0.3
        await node.on_command(command(sleeper, deadline=deadline))
        await eventually(lambda: not fault.kernel)
        assert time.time() - deadline < 3.0  # by the node, not the 15 s lease: the bench times it closely
        # The kernel is clean before the journal commit that follows it (one thread hop later).
        await eventually(lambda: not node.journal.entries()[0].is_open)
        [entry] = node.journal.entries()
        # No NATS in this test: the node knows the control plane could not have done it.
        assert (
            entry.reason == ("recovered: deadline passed while the control plane was unreachable (expired by the node)")
            and not entry.ended
        )
        fault.kernel[(UID, ".", "sentinel")] = 1  # would be wiped by a second kernel-side recover
        recover = await node.on_command(command(sleeper, op="recover"))  # the scheduler asks later
        assert recover is not None and recover.results[0].message == entry.reason and recover.results[0].ok
        assert fault.kernel == {(UID, ".", "sentinel"): 1}  # answered from the journal, kernel untouched
    finally:
        watchdog.cancel()


async def test_without_renewal_the_lease_recovers_a_fault_without_duration(
    tmp_path: Path, fault: Recording, sleeper: subprocess.Popen[bytes]
) -> None:
    n = make_node(tmp_path, fault, lease_ttl=0.3)
    n.connected = True  # NATS is up; the scheduler just stops renewing
    watchdog = asyncio.ensure_future(n.watchdog())
    try:
        await n.on_command(command(sleeper))
        await n.on_command(command(sleeper, uid="exempt"))
        await n.on_lease(m.NodeLease(node="n1", ttl_s=0.3, held=[UID, "exempt"], exempt=["exempt"]))
        await eventually(lambda: set(fault.kernel) == {("exempt", ".", f"/proc/{sleeper.pid}/ns/net")})
        [report] = [r for b in reports(n) for r in b.results if r.op == "recover"]
        assert report.message == "recovered: control-plane lease expired (the scheduler was silent for 0.3s)"
        assert n.journal.exempt() == {"exempt"}
    finally:
        watchdog.cancel()
        await stop(n)


async def test_renewals_keep_a_fault_in_force(
    tmp_path: Path, fault: Recording, sleeper: subprocess.Popen[bytes]
) -> None:
    n = make_node(tmp_path, fault, lease_ttl=0.4)
    watchdog = asyncio.ensure_future(n.watchdog())
    try:
        await n.on_command(command(sleeper))
        for _ in range(8):  # 0.8 s: twice the lease, renewed every 0.1 s
            await n.on_lease(m.NodeLease(node="n1", ttl_s=0.4, held=[UID]))
            await asyncio.sleep(0.1)
        assert len(fault.kernel) == 1
    finally:
        watchdog.cancel()
        await stop(n)


async def test_a_vanished_target_is_marked_recovered_with_the_reason(
    node: Node, fault: Recording, sleeper: subprocess.Popen[bytes]
) -> None:
    await node.on_command(command(sleeper))
    sleeper.kill()
    sleeper.wait()
    await node.tick()
    [entry] = node.journal.entries()
    assert entry.state == jr.RECOVERED and entry.reason.startswith("recovered: target gone (network namespace")
    assert any(r.message == entry.reason for b in reports(node) for r in b.results)


async def test_a_restarted_node_recovers_what_expired_and_reasserts_the_rest(
    tmp_path: Path, fault: Recording, sleeper: subprocess.Popen[bytes]
) -> None:
    n = make_node(tmp_path, fault)
    await n.on_command(command(sleeper, uid="short", deadline=time.time() + 0.2))
    await n.on_command(command(sleeper, uid="long", deadline=time.time() + 60))
    await stop(n)  # a crash: nothing recovered on the way out
    await asyncio.sleep(0.3)
    restarted = make_node(tmp_path, fault)
    try:
        summary = await restarted.start()
        assert summary == {"open": 2, "recovered": 1, "reasserted": 1}
        assert {k[0] for k in fault.kernel} == {"long"} and fault.applies == 3
        short = restarted.journal.get("short|.|ns/p")
        assert short is not None and short.reason == "recovered: deadline passed while the injector was down"
    finally:
        await stop(restarted)


async def test_a_halt_persists_across_a_restart(
    tmp_path: Path, fault: Recording, sleeper: subprocess.Popen[bytes]
) -> None:
    n = make_node(tmp_path, fault)
    await n.on_command(command(sleeper))
    await n.set_halt(m.HaltState(halted=True, reason="r", at=time.time()), "test")
    await stop(n)  # crashed before the watchdog acted
    restarted = make_node(tmp_path, fault)
    try:
        await restarted.start()
        assert restarted.halt.halted and not fault.kernel
    finally:
        await stop(restarted)


class Batched(Recording):
    """A partition-like fault that asks to be batched and remembers which thread ran each target."""

    batched = True

    def __init__(self) -> None:
        super().__init__()
        self.threads: dict[str, int] = {}

    def apply(self, ctx: faults.FaultContext, spec: m.FaultSpec) -> str:
        self.threads[ctx.action.target_id] = threading.get_ident()
        if ctx.action.target_id == "ns/p-7":
            raise faults.FaultError("netns busy")
        return super().apply(ctx, spec)


async def test_a_batched_fault_runs_in_few_jobs_and_one_failure_stays_its_own(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    fault = Batched()
    n = make_node(tmp_path, fault)
    try:
        base = command(sleeper)
        actions = [
            msgspec.structs.replace(base.actions[0], target_id=f"ns/p-{i}", selector_key=str(i)) for i in range(60)
        ]
        batch = await n.on_command(msgspec.structs.replace(base, actions=actions))
        assert batch is not None
        assert [r.target_id for r in batch.results] == [a.target_id for a in actions]
        assert [r.target_id for r in batch.results if not r.ok] == ["ns/p-7"]
        assert "netns busy" in batch.results[7].message
        assert len(fault.kernel) == 59  # every other target applied, the failed one left nothing
        assert len(set(fault.threads.values())) <= -(-60 // node_mod.EFFECT_CHUNK)  # one thread per chunk
    finally:
        await stop(n)
