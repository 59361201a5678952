"""Signed, fresh, single-use commands against a real nats-server and the real injector (its NATS
edge, its node, its journal and the real fault registry): a pod-kill of a real process that is
forged, unsigned, expired, tampered with or sent to the wrong node is refused, counted, audited,
and the process lives; a valid one kills it. A Task that appends to a file shows a replay refused,
also by a restarted injector. The kill switch cannot be un-halted by a forged or a replayed
resume, nor by one signed with the SLO guard's halt-only key (whose halts work), a real halt after
them still halts, and a lease's ttl is bounded by the node.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.signing import GUARD, OPERATOR, SCHEDULER, TRUST, seal_command
from unit.injector.factories import eventually

from chaosbus.cli import control
from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, signing, subjects
from chaosbus.injector.app import Edge
from chaosbus.injector.backends import procs
from chaosbus.injector.executor import Executor
from chaosbus.injector.journal import Journal
from chaosbus.injector.metrics import InjectorMetrics
from chaosbus.injector.node import Node

pytestmark = pytest.mark.integration
MAX_LEASE_S = 20.0


@dataclass
class Injector:
    node: Node
    edge: Edge
    tasks: list[asyncio.Task[Any]]

    def refused(self, what: str, reason: str) -> float:
        value = self.edge.metrics.registry.get_sample_value(
            "chaosbus_injector_messages_refused_total", {"what": what, "reason": reason}
        )
        return value or 0.0

    async def stop(self) -> None:
        if not self.tasks:
            return
        for t in self.tasks:
            t.cancel()
        await asyncio.wait(self.tasks, timeout=5)
        self.tasks = []
        self.node.close()
        self.node.journal.close()


async def start(journal_path: Path, url: str) -> Injector:
    journal = Journal(journal_path)
    node = Node(journal, Executor(journal, "n1"), lease_ttl=15.0, max_lease_ttl=MAX_LEASE_S)
    edge = Edge(node, "n1", InjectorMetrics(), trust=TRUST)
    return Injector(node, edge, [asyncio.ensure_future(node.watchdog()), asyncio.ensure_future(edge.run(url))])


@pytest.fixture
async def injector(tmp_path: Path, nats_server: natsserver.EmbeddedServer) -> AsyncIterator[Injector]:
    inj = await start(tmp_path / "journal.db", nats_server.url)
    try:
        yield inj
    finally:
        await inj.stop()


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def audit() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as logs:
        yield logs


def pod_kill(pid: int, node: str = "n1") -> m.NodeCommand:
    action = m.TargetAction(
        target_id="default/victim",
        op="apply",
        namespace="default",
        pod_name="victim",
        pod_uid="uid-victim",
        container_ids=[f"process://{pid}"],
        fault=m.PodKill(),
    )
    return m.NodeCommand(
        command_id=f"kill.{uuid.uuid4().hex[:8]}",
        experiment_uid="exp-kill",
        generation=1,
        kind="PodChaos",
        namespace="default",
        name="kill",
        node=node,
        issued_at=time.time(),
        actions=[action],
    )


def append_task(path: Path) -> m.NodeCommand:
    """A Task whose every run appends one line to `path`: a replay would be one line more."""
    argv = [sys.executable, "-c", f"open({str(path)!r}, 'a').write('ran\\n')"]
    action = m.TargetAction(target_id="default/append", op="apply", fault=m.Task(argv=argv, timeout_s=10))
    return m.NodeCommand(
        command_id=f"task.{uuid.uuid4().hex[:8]}",
        experiment_uid="exp-task",
        generation=1,
        kind="WorkflowNode",
        namespace="default",
        name="append",
        node="n1",
        issued_at=time.time(),
        actions=[action],
    )


async def send(bus: busmod.Bus, data: bytes, subject: str = "chaos.cmd.n1") -> None:
    await bus.js.publish(subject, data, headers={"Nats-Msg-Id": uuid.uuid4().hex})


async def results(bus: busmod.Bus) -> int:
    return (await bus.js.stream_info(subjects.RESULTS.name)).state.messages


async def drained(bus: busmod.Bus) -> None:
    """Every command was taken off the node's queue (acked or refused for good)."""

    async def empty() -> bool:
        return (await bus.js.stream_info(subjects.COMMANDS.name)).state.messages == 0

    await eventually(empty)


def audit_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("audit")]


async def test_a_valid_signed_pod_kill_kills(
    injector: Injector, bus: busmod.Bus, victim: subprocess.Popen[bytes]
) -> None:
    await send(bus, seal_command(pod_kill(victim.pid)))
    await eventually(lambda: not procs.process_alive(victim.pid))
    await eventually(lambda: results(bus))
    assert sum(injector.refused("command", r) for r in signing.REASONS) == 0


STRANGER = signing.Signer(Ed25519PrivateKey.generate())


def forged_by_a_stranger(cmd: m.NodeCommand) -> bytes:
    return seal_command(cmd, signer=STRANGER)


def signed_by_the_operator(cmd: m.NodeCommand) -> bytes:
    return seal_command(cmd, signer=OPERATOR)  # a trusted key, but trusted for the kill switch only


def unsigned(cmd: m.NodeCommand) -> bytes:
    return busmod.encode(cmd)


def expired(cmd: m.NodeCommand) -> bytes:
    return seal_command(cmd, ttl_s=60.0, now=time.time() - 61.0)


def tampered(cmd: m.NodeCommand) -> bytes:
    """A valid command to kill someone else, its target then changed to the victim."""
    other = seal_command(pod_kill(1))
    return other.replace(b'"process://1"', f'"process://{cmd.actions[0].container_ids[0][10:]}"'.encode())


def for_another_node(cmd: m.NodeCommand) -> bytes:
    return SCHEDULER.seal_message("chaos.cmd.n2", cmd, ttl_s=60.0)  # replayed onto n1's subject


@pytest.mark.parametrize(
    ("make", "reason", "why"),
    [
        (forged_by_a_stranger, "forged", "signed by a key this receiver does not trust"),
        (signed_by_the_operator, "forged", "a operator key may not sign this (needs scheduler)"),
        (unsigned, "unsigned", "not a signed envelope"),
        (expired, "expired", "s ago"),
        (tampered, "forged", "bad signature"),
        (for_another_node, "forged", "meant for 'chaos.cmd.n2', received as 'chaos.cmd.n1'"),
    ],
)
async def test_a_bad_command_is_refused_counted_audited_and_harms_nobody(
    injector: Injector,
    bus: busmod.Bus,
    victim: subprocess.Popen[bytes],
    audit: list[dict[str, Any]],
    make: Any,
    reason: str,
    why: str,
) -> None:
    cmd = pod_kill(victim.pid)
    await send(bus, make(cmd))
    await eventually(lambda: injector.refused("command", reason) == 1)
    await drained(bus)
    await asyncio.sleep(0.3)
    assert procs.process_alive(victim.pid), "the victim was killed"
    assert await results(bus) == 0 and injector.node.journal.entries() == []
    [line] = audit_lines(audit)
    assert line["what"] == "command" and line["subject"] == "chaos.cmd.n1" and line["reason"] == reason
    assert why in line["why"] and (line["signer"] == "-") == (reason == "unsigned")
    # the same command, properly signed, does what it says: the refusal was the signature's doing
    await send(bus, seal_command(cmd))
    await eventually(lambda: not procs.process_alive(victim.pid))


async def test_a_replayed_command_is_refused_and_runs_once(
    injector: Injector, bus: busmod.Bus, tmp_path: Path, audit: list[dict[str, Any]]
) -> None:
    ran = tmp_path / "ran"
    captured = seal_command(append_task(ran))
    await send(bus, captured)
    await eventually(lambda: results(bus))
    await send(bus, captured)  # the same bytes again, as an eavesdropper would send them
    await eventually(lambda: injector.refused("command", "replayed") == 1)
    await drained(bus)
    assert ran.read_text() == "ran\n" and await results(bus) == 1
    [line] = audit_lines(audit)
    assert line["reason"] == "replayed" and line["signer"] == SCHEDULER.kid


async def test_a_restarted_injector_refuses_a_replay_of_a_command_it_executed(
    injector: Injector, bus: busmod.Bus, tmp_path: Path, nats_server: natsserver.EmbeddedServer
) -> None:
    ran = tmp_path / "ran"
    captured = seal_command(append_task(ran))
    await send(bus, captured)
    await eventually(lambda: results(bus))
    await drained(bus)
    await injector.stop()
    again = await start(tmp_path / "journal.db", nats_server.url)
    try:
        await send(bus, captured)
        await eventually(lambda: again.refused("command", "replayed") == 1)
        await drained(bus)
        assert ran.read_text() == "ran\n" and await results(bus) == 1
    finally:
        await again.stop()


async def kill_switch(bus: busmod.Bus, halted: bool, reason: str = "") -> m.HaltState:
    return await control.set_halt(bus, halted=halted, reason=reason, signer=OPERATOR)


async def test_a_forged_resume_cannot_unhalt_and_a_real_halt_after_it_still_halts(
    injector: Injector, bus: busmod.Bus, audit: list[dict[str, Any]]
) -> None:
    node = injector.node
    kv = await bus.kv(subjects.CONTROL.name)
    await kill_switch(bus, True, "drill")
    await eventually(lambda: node.halt.halted)
    forged = busmod.encode(m.HaltState(halted=False, at=1e18))  # the attack of issue 13, as it was sent
    await kv.put(subjects.HALT_KEY, forged)
    await bus.nc.publish(subjects.HALT_SUBJECT, forged)
    await eventually(lambda: injector.refused("halt", "unsigned") == 2)  # the broadcast and the key
    wrong_key = SCHEDULER.seal_message(signing.CONTROL_AUD, m.HaltState(halted=False, at=1e18), ttl_s=None)
    await kv.put(subjects.HALT_KEY, wrong_key)
    await eventually(lambda: injector.refused("halt", "unsigned") == 2 and injector.refused("halt", "forged") == 1)
    await asyncio.sleep(1.5)  # more than one poll of the key: each revision is judged once
    assert node.halt.halted and node.halt.reason == "drill"
    assert injector.refused("halt", "unsigned") == 2 and injector.refused("halt", "forged") == 1
    assert node.journal.halt() == node.halt  # what a restart would start from

    await kill_switch(bus, False)
    await eventually(lambda: not node.halt.halted)
    await kv.put(subjects.HALT_KEY, forged)  # the forged state sits in the key at a higher revision
    await kill_switch(bus, True, "later")  # a real halt after it still halts
    await eventually(lambda: node.halt.halted and node.halt.reason == "later")
    assert {e["reason"] for e in audit_lines(audit)} == {"unsigned", "forged"}


async def test_the_guard_key_halts_but_its_resume_is_refused_and_counted(
    injector: Injector, bus: busmod.Bus, audit: list[dict[str, Any]]
) -> None:
    node = injector.node
    await eventually(lambda: injector.edge.node.connected)
    await control.set_halt(bus, halted=True, reason="SLO guard checkout: breached", signer=GUARD, by="guard checkout")
    await eventually(lambda: node.halt.halted and node.halt.reason == "SLO guard checkout: breached")
    await eventually(lambda: node.journal.halt() == node.halt)  # journaled just after it is held
    # The same key signing a resume (a guard gone wrong, or its key stolen): the key and the broadcast.
    await control.set_halt(bus, halted=False, reason="resumed", signer=GUARD, by="guard checkout")
    await eventually(lambda: injector.refused("halt", "forged") == 2)
    await asyncio.sleep(1.5)  # more than one poll of the key: each revision is judged once
    assert node.halt.halted and node.halt.reason == "SLO guard checkout: breached"
    assert injector.refused("halt", "forged") == 2
    lines = audit_lines(audit)
    assert {(e["reason"], e["signer"]) for e in lines} == {("forged", GUARD.kid)}
    assert all("may halt, never resume" in e["why"] for e in lines)
    await kill_switch(bus, False)  # the operator's resume works
    await eventually(lambda: not node.halt.halted)


async def test_an_old_resume_written_again_is_a_replay(injector: Injector, bus: busmod.Bus) -> None:
    node = injector.node
    kv = await bus.kv(subjects.CONTROL.name)
    await kill_switch(bus, True, "first")
    await kill_switch(bus, False)
    old_resume = (await kv.get(subjects.HALT_KEY)).value or b""
    await kill_switch(bus, True, "second")
    await eventually(lambda: node.halt.halted and node.halt.reason == "second")
    await kv.put(subjects.HALT_KEY, old_resume)  # validly signed, a new revision, an old sequence
    await eventually(lambda: injector.refused("halt", "replayed") == 1)
    assert node.halt.halted and node.halt.reason == "second"


async def test_a_lease_ttl_is_bounded_by_the_node_and_replays_and_forgeries_are_refused(
    injector: Injector, bus: busmod.Bus
) -> None:
    huge = m.NodeLease(node="n1", ttl_s=1e12, held=["exp-x"], exempt=[])
    subject = subjects.lease_subject("n1")
    signed = SCHEDULER.seal_message(subject, huge, ttl_s=60.0)
    await eventually(lambda: injector.edge.node.connected)
    # Connected is not yet subscribed: a core-NATS lease sent before the injector listens is lost.
    # Unsigned leases are sent until one is refused, so the node is listening before the rest.
    for _ in range(100):
        await bus.nc.publish(subject, busmod.encode(huge))  # unsigned
        await bus.nc.flush()
        await asyncio.sleep(0.2)
        if injector.refused("lease", "unsigned"):
            break
    await bus.nc.publish(subject, STRANGER.seal_message(subject, huge, ttl_s=60.0))
    await bus.nc.publish(subject, signed)
    await bus.nc.publish(subject, signed)  # the same lease again
    await eventually(lambda: injector.refused("lease", "replayed") == 1, within=20.0)
    assert injector.refused("lease", "unsigned") >= 1 and injector.refused("lease", "forged") == 1
    assert injector.node.lease.ttl_s == MAX_LEASE_S  # the one accepted lease, clamped
    assert injector.node.lease.exempt == set()


async def test_a_restarted_injector_refuses_a_replay_of_a_lease_it_accepted(
    injector: Injector, bus: busmod.Bus, tmp_path: Path, nats_server: natsserver.EmbeddedServer
) -> None:
    subject = subjects.lease_subject("n1")
    older = SCHEDULER.seal_message(subject, m.NodeLease(node="n1", ttl_s=5.0, held=["exp-old"], exempt=[]), ttl_s=60.0)
    newer = SCHEDULER.seal_message(subject, m.NodeLease(node="n1", ttl_s=7.0, held=["exp-new"], exempt=[]), ttl_s=60.0)
    await eventually(lambda: injector.edge.node.connected)
    await bus.nc.publish(subject, older)
    await bus.nc.publish(subject, newer)
    await eventually(lambda: injector.node.lease.ttl_s == 7.0)
    await injector.stop()
    again = await start(tmp_path / "journal.db", nats_server.url)
    try:
        await eventually(lambda: again.edge.node.connected)
        await bus.nc.publish(subject, newer)  # captured before the restart, sent again after it
        await bus.nc.publish(subject, older)
        await eventually(lambda: again.refused("lease", "replayed") == 2)
        assert again.node.lease.ttl_s != 7.0 and "exp-new" not in again.node.lease.until
        fresh = SCHEDULER.seal_message(subject, m.NodeLease(node="n1", ttl_s=9.0, held=[], exempt=[]), ttl_s=60.0)
        await bus.nc.publish(subject, fresh)  # the scheduler's next lease is honoured
        await eventually(lambda: again.node.lease.ttl_s == 9.0)
    finally:
        await again.stop()


def claims_seq(sealed: bytes) -> int:
    env = busmod.decode(sealed, m.Signed)
    return busmod.decode(bytes(env.body), m.Claims).seq


async def test_a_lease_carried_by_a_command_is_honoured_journaled_and_older_ones_refused_after_a_restart(
    injector: Injector, bus: busmod.Bus, tmp_path: Path, nats_server: natsserver.EmbeddedServer
) -> None:
    subject = subjects.lease_subject("n1")
    older = SCHEDULER.seal_message(subject, m.NodeLease(node="n1", ttl_s=5.0, held=["exp-old"]), ttl_s=60.0)
    ran = tmp_path / "ran"
    carried = m.NodeLease(node="n1", ttl_s=7.0, held=["exp-carried"])
    captured = seal_command(msgspec.structs.replace(append_task(ran), lease=carried))
    await send(bus, captured)
    await eventually(lambda: results(bus))
    node = injector.node
    assert node.lease.ttl_s == 7.0  # (what it holds is forgotten at once here: no fault is open)
    # journaled with the command's own mark, in the transaction that journaled its results
    assert (SCHEDULER.kid, subject, claims_seq(captured)) in node.journal.leases()
    await bus.nc.publish(subject, older)  # signed before the command: not after the lease it carried
    await eventually(lambda: injector.refused("lease", "replayed") == 1)
    assert node.lease.ttl_s == 7.0
    await drained(bus)
    await injector.stop()
    again = await start(tmp_path / "journal.db", nats_server.url)
    try:
        await send(bus, captured)  # the command with its lease, captured and sent again
        await eventually(lambda: again.refused("command", "replayed") == 1)
        await bus.nc.publish(subject, older)
        await eventually(lambda: again.refused("lease", "replayed") == 1)
        await drained(bus)
        assert again.node.lease.ttl_s == 15.0 and again.node.lease.last_heard is None
        assert ran.read_text() == "ran\n" and await results(bus) == 1
    finally:
        await again.stop()


async def test_a_command_carrying_an_outdated_or_another_nodes_lease_runs_without_it(
    injector: Injector, bus: busmod.Bus, tmp_path: Path
) -> None:
    subject = subjects.lease_subject("n1")
    ran = tmp_path / "ran"
    outdated = seal_command(
        msgspec.structs.replace(
            append_task(ran),
            experiment_uid="exp-task-2",
            lease=m.NodeLease(node="n1", ttl_s=3.0, held=["exp-outdated"]),
        )
    )
    foreign = seal_command(
        msgspec.structs.replace(append_task(ran), lease=m.NodeLease(node="n2", ttl_s=4.0, held=["exp-foreign"]))
    )
    newer = SCHEDULER.seal_message(subject, m.NodeLease(node="n1", ttl_s=9.0, held=[]), ttl_s=60.0)
    node = injector.node
    await send(bus, foreign)
    await eventually(lambda: results(bus))  # consuming: the lease subject is listened to by now
    assert node.lease.ttl_s == 15.0 and node.lease.last_heard is None
    await bus.nc.publish(subject, newer)
    await eventually(lambda: node.lease.ttl_s == 9.0)
    await send(bus, outdated)  # signed before that lease (a command redelivered after it)
    await eventually(lambda: ran.read_text() == "ran\nran\n")
    await drained(bus)
    assert node.lease.ttl_s == 9.0
    assert injector.refused("command", "replayed") == 0 and injector.refused("lease", "replayed") == 0


async def test_an_opt_out_carried_by_a_command_is_held_and_journaled_before_its_fault_runs(
    injector: Injector, bus: busmod.Bus, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    lease = m.NodeLease(node="n1", ttl_s=15.0, held=["exp-task"], exempt=["exp-task"])
    seen: list[tuple[bool, set[str]]] = []
    node = injector.node
    effect = node.executor.effect

    def watched(cmd: m.NodeCommand, plan: Any) -> Any:  # what the node knew when the fault ran
        seen.append(("exp-task" in node.lease.exempt, node.journal.exempt()))
        return effect(cmd, plan)

    node.executor.effect = watched  # type: ignore[method-assign]
    await send(bus, seal_command(msgspec.structs.replace(append_task(ran), lease=lease)))
    await eventually(lambda: results(bus))
    assert ran.read_text() == "ran\n" and seen == [(True, {"exp-task"})]
