"""What the scheduler sends, and in which order for one experiment: its memory (KV `scheduler`) and
its decision (`chaos.phase.<uid>`) together, then its node commands once both are stored, the
node's lease inside the first apply command for that node (`NodeCommand.lease`: one message, one
signature check and one journal write on the node, where a lease sent ahead was two of each).
Different experiments' writes of one batch are in flight together (one round trip for all, not
one each).

An experiment whose memory or decision could not be stored sends nothing further in this batch
(its targets stay in flight, so the in-flight timeout sends again what is then wanted); one whose
decision or command is larger than NATS allows is reported back to fail it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
import nats.errors

from chaosbus.common import bus as busmod
from chaosbus.common import commands as cmdparts
from chaosbus.common import logging as cblog
from chaosbus.common import messages as m
from chaosbus.common import signing, subjects
from chaosbus.scheduler.core import Outputs, SchedulerCore
from chaosbus.scheduler.metrics import SchedulerMetrics

log = cblog.get("scheduler")
COMMAND_HEADROOM = 8192  # below max_payload: headers, the encoder's rounding, the signed envelope (~300 B)
LEASE_FIELD_BYTES = 16  # `,"lease":` around an encoded lease inside a command
LEASE_EXTRA_S = 30.0  # a lease stays valid this much past its ttl: clocks of two machines differ
T = TypeVar("T")

Changes = list[tuple[str, m.ExperimentMemory | None]]


class NotSent(Exception):
    """Some experiments' effects could not be stored; the others' were sent."""


@dataclass
class Sent:
    """What one batch could not send: per experiment, too large (with why) or failed."""

    too_large: dict[str, str] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    @property
    def blocked(self) -> set[str]:
        return self.failed | set(self.too_large)


class Outbox:
    def __init__(
        self,
        bus: busmod.Bus,
        core: SchedulerCore,
        metrics: SchedulerMetrics,
        *,
        signer: signing.Signer | None,
        instance: str,
        lease_ttl: float,
        command_ttl: float,
    ) -> None:
        self.bus, self.core, self.metrics, self.signer, self.instance = bus, core, metrics, signer, instance
        self.lease_ttl, self.command_ttl = lease_ttl, command_ttl
        self._seq = itertools.count(1)

    async def send(self, changes: Changes, out: Outputs) -> Sent:
        sent = Sent()
        # Write-ahead: the memory of what is about to be sent, and the decision the recorder reads
        # records from, are stored before any command leaves (together: neither needs the other).
        await asyncio.gather(self.remember(changes, sent), self.decide(out.decisions, sent))
        commands = [c for c in out.commands if c.experiment_uid not in sent.blocked]
        applying = {c.node for c in commands if _applies(c)}
        # The lease (and any opt-out) reaches the node with, and so before, the fault.
        leases = {ls.node: ls for ls in self.core.leases(time.time(), self.lease_ttl, self.instance, applying)}
        by_node: dict[str, list[m.NodeCommand]] = {}
        for c in commands:
            by_node.setdefault(c.node, []).append(c)
        # Nodes in parallel, each node's commands in order.
        await asyncio.gather(*(self._send_in_order(cmds, sent, leases.get(n)) for n, cmds in by_node.items()))
        return sent

    async def remember(self, changes: Changes, sent: Sent) -> None:
        kv = await self.bus.bucket(subjects.SCHEDULER)

        async def write(uid: str, mem: m.ExperimentMemory | None) -> None:
            key = subjects.memory_key(uid)
            if mem is None:
                await kv.purge(key)  # purge, not delete: no tombstone left per finished experiment
            else:
                await kv.put(key, mem)

        for (uid, _), err in zip(changes, await _each(write(uid, mem) for uid, mem in changes), strict=True):
            if err is None:
                self.metrics.memory_writes.inc()
            elif isinstance(err, nats.errors.MaxPayloadError):  # several thousand targets: status stays the fallback
                self.metrics.errors.labels("memory_too_large").inc()
                log.error("experiment memory larger than NATS max_payload: not kept", experiment=uid, error=str(err))
            else:
                self.core.unsaved(uid)  # written again with the next change or retry
                sent.failed.add(uid)
                log.error("experiment memory not written", experiment=uid, error=repr(err)[:500])

    async def decide(self, decisions: list[m.ExperimentDecision], sent: Sent) -> None:
        async def one(d: m.ExperimentDecision) -> None:
            msg_id = f"{d.experiment_uid}.{self.instance}.{next(self._seq)}"
            await self.bus.publish(subjects.DECISIONS, subjects.decision_subject(d.experiment_uid), d, msg_id=msg_id)

        for d, err in zip(decisions, await _in_order_per(decisions, lambda d: d.experiment_uid, one), strict=True):
            if err is None:
                self.metrics.decisions.inc()
                if d.selection_error:
                    log.warning("selection failed", experiment=d.name, error=d.selection_error)
            elif isinstance(err, nats.errors.MaxPayloadError):
                sent.too_large[d.experiment_uid] = (
                    f"its decision ({len(d.records or [])} records) is larger than NATS "
                    f"max_payload ({self.bus.nc.max_payload} bytes)"
                )
            else:
                sent.failed.add(d.experiment_uid)
                log.error("decision not published", experiment=d.name, error=repr(err)[:500])

    async def _send_in_order(self, commands: list[m.NodeCommand], sent: Sent, lease: m.NodeLease | None) -> None:
        """Each command in parts below max_payload (commands.py); an experiment whose part NATS
        still refuses is marked too large, and its later commands are not sent. `lease` goes in
        the first part of the first apply (split that much smaller), or on its own ahead of the
        commands where there is no such part to carry it.
        """
        budget = self.bus.nc.max_payload - COMMAND_HEADROOM
        room = 0 if lease is None else len(busmod.encode(lease)) + LEASE_FIELD_BYTES
        carrier = None
        if lease is not None and room <= budget // 2:
            carrier = next((c for c in commands if c.experiment_uid not in sent.blocked and _applies(c)), None)
        if lease is not None and carrier is None:
            await self.send_lease(lease)
        for c in commands:
            if c.experiment_uid in sent.blocked:
                if c is carrier and lease is not None:  # it will not be sent: the lease goes on its own
                    carrier = None
                    await self.send_lease(lease)
                continue
            parts = cmdparts.parts(c, budget - room if c is carrier else budget)
            if c is carrier:
                parts[0] = msgspec.structs.replace(parts[0], lease=lease)
            for part in parts:
                try:
                    await self.bus.publish(
                        subjects.COMMANDS,
                        subjects.command_subject(c.node),
                        part,
                        msg_id=part.command_id,
                        seal=self.seal,
                    )
                except nats.errors.MaxPayloadError:
                    sent.too_large[c.experiment_uid] = (
                        f"a command to node {c.node} is larger than NATS max_payload "
                        f"({self.bus.nc.max_payload} bytes) even split per target"
                    )
                    break
                except Exception as e:
                    sent.failed.add(c.experiment_uid)
                    log.error("command not sent", experiment=c.name, node=c.node, error=repr(e)[:500])
                    break
                self.metrics.commands.labels(c.kind).inc()
                log.info(
                    "command sent",
                    experiment=c.name,
                    node=c.node,
                    actions=len(part.actions),
                    ops=sorted({a.op for a in part.actions}),
                    part=part.command_id,
                )
            for a in c.actions:
                self.metrics.actions.labels(c.kind, a.op).inc()

    def seal(self, subject: str, payload: bytes) -> bytes:
        if self.signer is None:
            return payload
        return self.signer.seal(subject, payload, ttl_s=self.command_ttl)

    def seal_lease(self, subject: str, payload: bytes) -> bytes:
        if self.signer is None:
            return payload
        return self.signer.seal(subject, payload, ttl_s=self.lease_ttl + LEASE_EXTRA_S)

    async def send_command(self, command: m.NodeCommand) -> None:
        try:
            await self.bus.publish(
                subjects.COMMANDS,
                subjects.command_subject(command.node),
                command,
                msg_id=command.command_id,
                seal=self.seal,
            )
        except nats.errors.MaxPayloadError as e:  # a Task too large to send: its step times out, nothing crashes
            self.metrics.errors.labels("max_payload").inc()
            log.error("command larger than NATS max_payload: not sent", experiment=command.name, error=str(e))
            return
        self.metrics.commands.labels(command.kind).inc()

    async def send_leases(self, nodes: set[str] | None = None) -> None:
        for lease in self.core.leases(time.time(), self.lease_ttl, self.instance, nodes):
            await self.send_lease(lease)

    async def send_lease(self, lease: m.NodeLease) -> None:
        with contextlib.suppress(Exception):  # core NATS: the next renewal covers a lost one
            await self.bus.signal(subjects.LEASES, subjects.lease_subject(lease.node), lease, seal=self.seal_lease)


def _applies(c: m.NodeCommand) -> bool:
    return any(a.op == "apply" for a in c.actions)


async def _each(aws: Iterable[Awaitable[None]]) -> list[BaseException | None]:
    """Await all at once; per awaitable its exception or None (a cancel of the caller still cancels)."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, Exception):
            raise r
    return [r if isinstance(r, BaseException) else None for r in results]


async def _in_order_per(
    items: list[T], key: Callable[[T], str], send: Callable[[T], Awaitable[None]]
) -> list[BaseException | None]:
    """`send` every item: items of one key one after another, different keys at once; per item
    its exception or None (an item after a failed one of its key is not sent: that exception).
    """
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(key(item), []).append(i)
    outcome: list[BaseException | None] = [None] * len(items)

    async def run(indexes: list[int]) -> None:
        for n, i in enumerate(indexes):
            try:
                await send(items[i])
            except Exception as e:
                for j in indexes[n:]:
                    outcome[j] = e
                return

    await asyncio.gather(*(run(ix) for ix in groups.values()))
    return outcome
