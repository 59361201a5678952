"""The injector's edge. The node's own machinery (journal reconcile, watchdog, sweeper) starts
first and runs whether or not NATS is reachable; the NATS side connects (retrying forever) and
feeds it: commands from this node's durable consumer (acked once their results are in the
journal's outbox), leases, the kill switch (subject and KV key), and publishes the outbox in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
from pathlib import Path

import nats.errors
from nats.aio.msg import Msg
from prometheus_client import Counter, Gauge

from chaosbus.common import bus as busmod
from chaosbus.common import commands, config, service, settings, signing, subjects, wire
from chaosbus.common import logging as cblog
from chaosbus.common import messages as m
from chaosbus.common import metrics as cbmetrics
from chaosbus.injector import authorize, core, faults, flags, loops
from chaosbus.injector import executor as ex
from chaosbus.injector.backends import kit
from chaosbus.injector.gate import Gate, HaltIn, LeaseMark, Ticket
from chaosbus.injector.journal import Entry, Journal, OutboxRow, SignedMark
from chaosbus.injector.metrics import InjectorMetrics
from chaosbus.injector.node import Node, Recovered
from chaosbus.injector.sweeper import Sweeper

log = cblog.get("injector")
COMMAND_ACK_WAIT_S = 10.0  # an unacked command (injector killed mid-way) is redelivered after this
HALT_POLL_S = 1.0
RETRY_S = 1.0
COMMANDS = "commands"  # the readiness part: this node's command consumer bound


class Edge:
    """Everything that talks to NATS, around one Node."""

    def __init__(self, node: Node, name: str, metrics: InjectorMetrics, *, trust: signing.Trust | None) -> None:
        """`trust`: the public keys commands, leases and the kill switch must be signed with
        (None: unsigned mode, only to measure what signing costs).
        """
        self.node, self.name, self.metrics = node, name, metrics
        reg = metrics.registry
        self.gate = Gate(trust, reg, clock=node.clock)
        wire.prepare(m.NodeCommand, m.NodeLease, m.HaltState)  # what the gate decodes
        self.gate.load(
            node.journal.signed(node.clock()),
            [LeaseMark(kid, subject, seq) for kid, subject, seq in node.journal.leases()],
        )
        self._tickets: dict[str, Ticket] = {}  # command id -> its signature's ticket, while it runs
        self._kv_revision = 0  # the last revision of the KV key looked at (each is judged once)
        self.ready = service.Readiness()  # /readyz: connected, with this node's command consumer bound
        self.ready.pending(COMMANDS, "the command consumer is not bound yet")
        self.recoveries = Counter(
            "chaosbus_injector_node_recoveries_total",
            "Faults the node recovered on its own, by reason",
            ["reason"],
            registry=reg,
        )
        self.halted = Gauge("chaosbus_injector_halted", "1 while the kill switch is engaged", registry=reg)
        # Every known label value exists from the start at 0, so that a dashboard's rate() and an
        # alert see "none yet" rather than no series at all.
        for label in RECOVERY_REASONS:
            self.recoveries.labels(label)
        for tag in node.executor.registry:
            metrics.refusals.labels(tag)
        node.on_recovered = self._count
        node.on_effect = self._observe

    def _observe(self, action: m.TargetAction, result: m.TargetResult, seconds: float) -> None:
        tag = faults.spec_tag(action.fault)
        self.metrics.latency.labels(tag, action.op).observe(seconds)
        if not result.ok:
            self.metrics.errors.labels(tag, action.op, "retryable" if result.retryable else "permanent").inc()

    def _count(self, done: list[Recovered]) -> None:
        for due, _ in done:
            self.recoveries.labels(_reason_label(due.reason)).inc()

    async def run(self, url: str) -> None:
        while True:
            try:
                bus = await busmod.connect(url, f"chaosbus-injector-{self.name}")
            except Exception as e:
                log.info("NATS unreachable; the node keeps watching its faults", error=str(e) or type(e).__name__)
                await asyncio.sleep(RETRY_S)
                continue
            self.ready.bus = bus
            try:
                await self._serve(bus)
            except Exception as e:
                log.exception("NATS edge failed; reconnecting", error=str(e))
            finally:
                self.ready.bus = None
                self.ready.pending(COMMANDS, "the command consumer is not bound yet")
                self.node.connected = False
                with contextlib.suppress(Exception):
                    await bus.close()
            await asyncio.sleep(RETRY_S)

    async def _serve(self, bus: busmod.Bus) -> None:
        await bus.ensure()
        await bus.listen(subjects.LEASES, self._on_lease, subject=subjects.lease_subject(self.name))
        await bus.listen(subjects.HALT, self._on_halt)
        where = bus.nc.connected_url
        log.info("injector ready", node=self.name, nats=f"{where.hostname}:{where.port}" if where else "")
        await service.run_forever(
            self._track(bus),
            self._poll_halt(bus),
            self._publish(bus),
            self._consume(bus),
            loops.report_health(self.node, self.name, bus),
        )

    async def _track(self, bus: busmod.Bus) -> None:
        while True:
            if bus.nc.is_closed:
                # nats-py stops reconnecting for good after some refusals (the auth callout not
                # answering in time while the auth service starts, twice): a new connection then.
                raise ConnectionError("the NATS connection closed")
            self.node.connected = bus.nc.is_connected
            self.halted.set(1 if self.node.halt.halted else 0)
            await asyncio.sleep(0.2)

    async def _on_lease(self, msg: Msg) -> None:
        got = self.gate.lease(msg.data, msg.subject)
        if got is None:
            return
        lease, mark = got
        if mark is not None:  # before it is honoured: a restart must refuse it again
            await self.node.run_in_thread(self.node.journal.remember_lease, mark.kid, mark.subject, mark.seq)
        if subjects.token(lease.node) == subjects.token(self.name):
            await self.node.on_lease(lease)

    async def _on_halt(self, msg: Msg) -> None:
        got = self.gate.halt(msg.data, msg.subject, revision=None)
        if got is not None:
            await self._adopt(got, "subject", msg.subject)

    async def _adopt(self, got: HaltIn, source: str, subject: str) -> None:
        if await self.node.set_halt(got.state, source, seq=got.seq) == "replayed":
            self.gate.refuse(
                "halt",
                subject,
                signing.Refused(
                    "replayed",
                    got.kid,
                    f"a resume signed before the last state adopted (revision {got.state.revision})",
                ),
            )

    async def _poll_halt(self, bus: busmod.Bus) -> None:
        """The KV key is the durable copy: read it now and then (a missed broadcast, a restart)."""
        while True:
            with contextlib.suppress(Exception):
                await self._read_halt(bus)
            await asyncio.sleep(HALT_POLL_S)

    async def _read_halt(self, bus: busmod.Bus) -> None:
        entry = await (await bus.bucket(subjects.CONTROL)).entry_of(subjects.HALT_KEY)
        if entry is None or entry.deleted or entry.revision == self._kv_revision:
            return
        self._kv_revision = entry.revision
        key = subjects.CONTROL.subject(subjects.HALT_KEY)
        # The stored envelope, not the value read from it: the gate checks its signature first.
        got = self.gate.halt(entry.data, key, revision=entry.revision)
        if got is not None:
            await self._adopt(got, "kv", key)

    async def prefetch_halt(self, url: str) -> None:
        """Before the start-up reconcile: a halt set while this injector was down must win over
        re-asserting its faults. Best effort, bounded: the node does not wait for NATS.
        """
        try:
            bus = await asyncio.wait_for(
                busmod.connect(url, f"chaosbus-injector-{self.name}-start", connect_timeout=0.5), timeout=1.0
            )
        except Exception:
            return
        try:
            await asyncio.wait_for(self._read_halt(bus), timeout=1.0)
        except Exception as e:
            log.info("halt state not read at start", error=str(e) or type(e).__name__)
        finally:
            with contextlib.suppress(Exception):
                await bus.close()

    async def _publish(self, bus: busmod.Bus) -> None:
        """Publish the outbox in order; a row goes only once JetStream has it (PubAck)."""
        journal = self.node.journal
        while True:
            self.node.outbox_kick.clear()
            rows = await self.node.run_in_thread(journal.outbox, 100)
            sent, moved = 0, False
            for row in rows:
                try:
                    await bus.publish_encoded(
                        subjects.RESULTS,
                        subjects.journaled_result_subject(self.name, row.subject),
                        row.payload,
                        msg_id=row.msg_id,
                        ack_wait_s=2.0,
                    )
                except nats.errors.MaxPayloadError:  # never sendable as it is: it must not block the rows behind
                    await self._too_large(bus, row)
                    moved = True
                    break
                except Exception as e:
                    log.info("results wait in the outbox", pending=len(rows) - sent, error=str(e) or type(e).__name__)
                    break
                await self.node.run_in_thread(journal.outbox_done, row.seq)
                sent += 1
            if rows and (sent == len(rows) or moved):
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.node.outbox_kick.wait(), timeout=RETRY_S)

    async def _too_large(self, bus: busmod.Bus, row: OutboxRow) -> None:
        """A result batch over max_payload goes with its outputs cut (keeping its turn); anything
        else that large is set aside in the journal (table outbox_aside) and counted.
        """
        journal = self.node.journal
        smaller = core.shrunk(row.payload, bus.nc.max_payload - 4096)
        if smaller is not None:
            await self.node.run_in_thread(journal.outbox_replace, row.seq, smaller)
            log.warning("result larger than NATS max_payload: outputs cut", subject=row.subject, bytes=len(row.payload))
            return
        await self.node.run_in_thread(journal.outbox_aside, row.seq, "larger than NATS max_payload")
        self.metrics.errors.labels("outbox", "publish", "max_payload").inc()
        log.error("outbox row larger than NATS max_payload: set aside", subject=row.subject, bytes=len(row.payload))

    def _open_command(self, msg: Msg) -> m.NodeCommand | None:
        opened = self.gate.command(msg.data, msg.subject)
        if opened is None:
            return None
        cmd, ticket = opened
        if ticket is not None:
            self._tickets[cmd.command_id] = ticket
        return cmd

    async def _consume(self, bus: busmod.Bus) -> None:
        async def handle(cmd: m.NodeCommand) -> None:
            ticket = self._tickets.pop(cmd.command_id, None)
            mark = None if ticket is None else SignedMark(ticket.kid, ticket.seq, ticket.exp, ticket.lease_subject)
            if cmd.lease is not None and subjects.token(cmd.lease.node) == subjects.token(self.name):
                # Before the fault, as a lease sent ahead of it was; journaled with the command.
                await self.node.on_lease(cmd.lease)
            try:
                journaled = await run(cmd, ticket, mark)
            except BaseException:
                self.gate.failed(ticket)
                raise
            if mark is not None and not journaled:  # dropped, or a duplicate: no result commit carried it
                await self.node.run_in_thread(self.node.journal.remember_signed, mark)

        async def run(cmd: m.NodeCommand, ticket: Ticket | None, mark: SignedMark | None) -> bool:
            """Whether the command's results (and `mark` with them) were journaled."""
            with cblog.bound(experiment=cmd.experiment, experiment_uid=cmd.experiment_uid):
                try:
                    cmd = commands.expand(cmd)
                except commands.UnknownPeerSet as e:  # never from the scheduler: dropped, not guessed
                    log.error("command dropped", command=cmd.command_id, error=str(e))
                    return False
                batch = await self.node.on_command(cmd, mark)
                if batch is None and ticket is not None:  # the journal knows it: executed before
                    self.gate.refuse(
                        "command",
                        subjects.command_subject(self.name),
                        signing.Refused("replayed", ticket.kid, f"command {cmd.command_id} was already executed"),
                    )
                if batch is not None:
                    self.metrics.commands.labels(cmd.kind).inc()
                    for a, r in zip(cmd.actions, batch.results, strict=False):
                        if r.ok:
                            continue
                        if r.message.startswith(authorize.REFUSED):
                            # The audit line: who asked (the command), for what (target, fault), why.
                            self.metrics.refusals.labels(faults.spec_tag(a.fault)).inc()
                            log.warning(
                                "target refused",
                                command_id=cmd.command_id,
                                target=r.target_id,
                                pod_uid=a.pod_uid,
                                fault=faults.spec_tag(a.fault),
                                containers=a.container_ids,
                                why=r.message,
                            )
                        else:
                            log.warning(f"{r.op} failed", target=r.target_id, error=r.message)
                return batch is not None

        while True:
            try:
                await bus.consume(
                    subjects.COMMANDS,
                    handle,
                    durable=subjects.injector_consumer(self.name),
                    batch=16,
                    ack_wait=COMMAND_ACK_WAIT_S,
                    detach=runs_long,
                    opener=self._open_command,
                    subscribed=lambda: self.ready.done(COMMANDS),
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:  # JetStream briefly unavailable (a restarted server): try again
                self.ready.pending(COMMANDS, f"the command consumer is restarting ({str(e) or type(e).__name__})")
                log.info("command consumer restarting", error=str(e) or type(e).__name__)
                await asyncio.sleep(RETRY_S)


def runs_long(cmd: m.NodeCommand) -> bool:
    """A Workflow Task (a process, or a Pod in cluster mode) runs for as long as its command does:
    it is handled beside the command loop, so faults sent meanwhile are not held up behind it.
    """
    return cmd.kind == "WorkflowNode"


RECOVERY_REASONS = ("halted", "deadline", "lease", "target_gone", "failed_apply", "other")


def _reason_label(reason: str) -> str:
    for label in RECOVERY_REASONS[:-1]:
        if label.replace("_", " ") in reason:
            return label
    return "other"


async def _readback_forever(node: Node, metrics: InjectorMetrics, interval: float, *, kernel: bool = True) -> None:
    """The journal's gauges and the kernel read-back ones (drops.py, readback.py; not for an
    injector whose faults leave no kernel state, `kernel` False), refreshed every `interval`."""
    while True:
        try:
            entries = await node.run_in_thread(node.journal.open_entries)
        except Exception as e:
            log.exception("reading the journal for read-back failed", error=str(e))
            entries = None
        metrics.lease_age.set(node.lease_age())
        if entries is not None:
            metrics.open_faults.set(len(entries))
        if entries is not None and kernel:
            await _read_kernel(node, metrics, entries)
        await asyncio.sleep(interval)


async def _read_kernel(node: Node, metrics: InjectorMetrics, entries: list[Entry]) -> None:
    """The drop counters, qdiscs, stressors and skewed clocks of the open faults, read off the
    fault pool (a slow read never delays a command)."""
    from chaosbus.injector import drops, readback  # kernel libraries: a node injector's only

    try:
        packets, octets = await asyncio.to_thread(drops.read, entries, node.executor.backends.nft)
        metrics.dropped_packets.set_all({k: float(v) for k, v in packets.items()})
        metrics.dropped_bytes.set_all({k: float(v) for k, v in octets.items()})
    except Exception as e:
        log.exception("reading drop counters failed", error=str(e))
    for gauge, read in (
        (metrics.qdiscs, functools.partial(readback.qdiscs, shaper=node.executor.backends.tc)),
        (metrics.stressors, readback.stressors),
        (metrics.skewed, readback.skewed),
    ):
        try:
            found = await asyncio.to_thread(read, entries)
            gauge.set_all({k: float(v) for k, v in found.items()})
        except Exception as e:
            log.exception("read-back failed", gauge=gauge.name, error=str(e))


async def main(args: argparse.Namespace) -> None:
    metrics = InjectorMetrics()
    name = subjects.CLUSTER_NODE if args.cluster else config.node_name(args.node)
    guard = service.guard(args)
    path = Path(args.journal) if args.journal else flags.default_journal(name)
    journal = Journal(path, sync=args.journal_sync)
    api = None
    if args.cluster:  # API-level faults through the Kubernetes API, same journaled machinery
        from chaosbus.common import kubeclient  # kubernetes_asyncio: ~70 MB, only the cluster role needs it
        from chaosbus.injector import cluster

        api = await kubeclient.api_client(args.kubeconfig)
        pods = cluster.KubePods(api, asyncio.get_running_loop())
        policy = authorize.Policy(guard=guard, mode=authorize.CLUSTER, api=True)
        tasks = flags.task_policy(guard, args.task_namespaces)
        executor = ex.Executor(
            journal,
            name,
            registry=cluster.registry(pods, cluster.pause_image(args.pause_image), tasks),
            resolve=cluster.resolve_pod_only,
            policy=policy,
            backends=kit.on_demand(nats_url=args.nats),  # API-level faults: no kernel backend is ever made
        )
    else:
        policy = authorize.Policy(guard=guard, mode=args.mode)
        backends = kit.build(flags.runtime_config(args), nats_url=args.nats)  # --nats: never cut
        await asyncio.to_thread(backends.prepare)  # the probes a first fault would otherwise wait for
        log.info(
            "node prepared",
            nftables=backends.nft.cannot() or "usable",
            tc_missing={kind: why for kind, why in backends.tc.capabilities().items() if why},
        )
        executor = ex.Executor(journal, name, policy=policy, backends=backends)
    env = settings.current()
    node = Node(
        journal,
        executor,
        lease_ttl=args.lease_seconds,
        max_lease_ttl=args.max_lease_seconds,
        recover_chunk=env.recover_chunk,
        effect_chunk=env.effect_chunk,
    )
    edge = Edge(node, name, metrics, trust=load_trust(args))
    try:
        port = cbmetrics.serve(metrics.registry, args.metrics_port, args.metrics_addr, ready=edge.ready.unready)
        log.info(
            "injector starting",
            node=name,
            journal=str(path),
            metrics_port=port,
            lease_s=args.lease_seconds,
            mode=policy.mode,
            protected_namespaces=sorted(guard.protected_namespaces),
            allow_host_network_testing=guard.allow_host_network_testing,
        )
        await edge.prefetch_halt(args.nats)
        await node.start()  # expired faults never wait for the network
        if api is not None:  # no kernel state here: nothing for the sweeper, no kernel read-back
            from chaosbus.common import kubehealth

            await service.run_forever(
                node.watchdog(),
                loops.housekeeping_forever(node, args.sweep_interval),
                _readback_forever(node, metrics, args.drops_interval, kernel=False),
                edge.run(args.nats),
                kubehealth.watch_api(api, edge.ready),
            )
            return
        sweeper = Sweeper(
            journal,
            node.locks.gate,
            name,
            scope=args.sweep_scope,
            run=node.run_in_thread,
            backends=executor.backends,
            metrics=metrics,
        )
        swept = await sweeper.sweep()
        log.info("start-up sweep", netns=swept.netns, removed=len(swept.removed), counts=swept.counts)
        await service.run_forever(
            node.watchdog(),
            loops.sweep_forever(node, sweeper, args.sweep_interval),
            _readback_forever(node, metrics, args.drops_interval),
            edge.run(args.nats),
        )
    finally:
        node.close()
        journal.close()
        node.executor.backends.close()
        if api is not None:
            await api.close()


def load_trust(args: argparse.Namespace) -> signing.Trust | None:
    """The trusted public keys (--keys-dir, else CHAOSBUS_KEYS_DIR or the state dir's `keys`)."""
    if signing.unsigned_mode():
        log.warning(
            "UNSIGNED MODE (CHAOSBUS_UNSIGNED=1): commands, leases and the kill switch are not "
            "verified; anyone who can publish on NATS can command this node"
        )
        return None
    directory = Path(args.keys_dir) if args.keys_dir else signing.keys_dir()
    trust = signing.Trust.from_dir(directory)
    if not trust.kids("scheduler"):
        log.error("no trusted scheduler key: every command and lease will be refused", keys_dir=str(directory))
    if not trust.kids("operator"):
        log.error(
            "no trusted operator key: kill-switch states will be refused (the lease still recovers "
            "faults when the scheduler goes silent)",
            keys_dir=str(directory),
        )
    log.info(
        "trusted keys",
        keys_dir=str(directory),
        scheduler=trust.kids("scheduler"),
        operator=trust.kids("operator"),
        guard=trust.kids("guard"),
    )
    return trust
