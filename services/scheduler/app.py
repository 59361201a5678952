"""The scheduler's edge: feed the core with targets (KV), object events and results (JetStream),
wake it at its next deadline, publish its commands and decisions, and renew every node's dead-man
lease (core NATS, every ttl/3; a node that stops hearing it recovers its leased faults).

Only the holder of the leader lease (election.py) does any of this; a standby waits, sending
nothing. The leader writes what it decided to KV `scheduler` before it sends it, and a new leader
loads that memory before it acts, so timers and in-flight work survive `kill -9`.

The core runs one message at a time; what it decides is sent by a pipeline (common/pipeline.py,
outbox.py): each experiment's writes in the order decided, different experiments' together, so a
burst of experiments shares its round trips instead of waiting for each in turn. A result is acked
once its effects are stored.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path

import nats.errors

from chaosbus.common import bus as busmod
from chaosbus.common import config as cbconfig
from chaosbus.common import logging as cblog
from chaosbus.common import messages as m
from chaosbus.common import service, settings, signing, subjects
from chaosbus.common.pipeline import Pipeline
from chaosbus.common.store import ObjectStore
from chaosbus.scheduler import outbox as ob
from chaosbus.scheduler import schedules as sch
from chaosbus.scheduler.core import Outputs, SchedulerCore
from chaosbus.scheduler.election import Election, LostLeadership
from chaosbus.scheduler.flows import Flows
from chaosbus.scheduler.leader import Leadership
from chaosbus.scheduler.metrics import SchedulerMetrics, by_namespace
from chaosbus.scheduler.selection import SelectionConfig
from chaosbus.scheduler.triggers import Triggers

log = cblog.get("scheduler")
LEASE_TTL_S = 15.0  # CHAOSBUS_LEASE_SECONDS
LEADER_TTL_S = 10.0  # CHAOSBUS_LEADER_SECONDS, --leader-ttl
COMMAND_TTL_S = 300.0
IN_FLIGHT = 128  # batches of effects unfinished at once before the intake waits
LEADER = "leader"  # the readiness part: a standby reading the lease, or a leader that replayed


class Scheduler:
    def __init__(
        self,
        bus: busmod.Bus,
        core: SchedulerCore,
        metrics: SchedulerMetrics,
        *,
        signer: signing.Signer | None,
        lease_ttl: float = LEASE_TTL_S,
        command_ttl: float = COMMAND_TTL_S,
    ) -> None:
        """`signer`: seals every node command and lease (None: unsigned mode, only to measure)."""
        self.bus, self.core, self.metrics, self.lease_ttl = bus, core, metrics, lease_ttl
        self.instance = uuid.uuid4().hex[:8]
        self.outbox = ob.Outbox(
            bus, core, metrics, signer=signer, instance=self.instance, lease_ttl=lease_ttl, command_ttl=command_ttl
        )
        self.effects = Pipeline(IN_FLIGHT, name="scheduler")
        self._wake = asyncio.Event()
        self._sleep_until = 0.0  # when the timers wake up next by themselves
        self.replayed = asyncio.Event()
        self.flows = Flows(
            self.publish_writes,
            self.outbox.send_command,
            self.task_node,  # Workflows and StatusChecks
            metrics=metrics,
        )
        self.schedules = sch.ScheduleCore(started_at=time.time(), ready=False)  # ready once replayed

    def publish(self, out: Outputs) -> asyncio.Future[None]:
        """Hand what the core just decided, with the memory it changed, to the pipeline: sent
        after this experiment's earlier effects, beside other experiments'. Called right after the
        core, with no await between, so that each batch carries the memory of its own decision.
        """
        for err in out.errors:
            self.metrics.errors.labels("bad_object").inc()
            log.error("experiment rejected", error=err)
        changes = self.core.take_changes()
        keys = {uid for uid, _ in changes} | {d.experiment_uid for d in out.decisions}
        keys |= {c.experiment_uid for c in out.commands}
        if not keys:
            nothing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            nothing.set_result(None)
            return nothing
        task = self.effects.submit(keys, lambda: self._send(changes, out))
        due = (e.due_at for uid in keys if (e := self.core.experiments.get(uid)) is not None)
        if any(d is not None and d < self._sleep_until for d in due):
            self._wake.set()  # the timers sleep past this experiment's next deadline
        return task

    async def _send(self, changes: ob.Changes, out: Outputs) -> None:
        sent = await self.outbox.send(changes, out)
        for uid, reason in sent.too_large.items():  # the experiment fails, saying why; the scheduler goes on
            self.metrics.errors.labels("max_payload").inc()
            self.publish(self.core.fail(uid, reason, time.time()))
        if sent.failed:
            raise ob.NotSent(f"effects of {len(sent.failed)} experiment(s) not stored: {sorted(sent.failed)[:5]}")

    async def publish_writes(self, writes: list[m.ObjectWrite]) -> None:
        """Objects this scheduler decided (children, orchestration status): the recorder writes them."""
        for w in writes:
            try:
                await self.bus.publish(
                    subjects.WRITES, subjects.write_subject(w.kind, w.namespace, w.name), w, msg_id=w.write_id
                )
            except nats.errors.MaxPayloadError as e:
                self.metrics.errors.labels("max_payload").inc()
                log.error(
                    "object write larger than NATS max_payload: not sent",
                    kind=w.kind,
                    namespace=w.namespace,
                    name=w.name,
                    op=w.op,
                    error=str(e),
                )
                continue
            self.metrics.object_writes.labels(w.op, w.reason).inc()
            log.info("object write sent", op=w.op, kind=w.kind, namespace=w.namespace, name=w.name, reason=w.reason)

    async def publish_schedules(self, out: sch.Outputs) -> None:
        for note in out.notes:
            log.info("schedule", what=note)
        await self.publish_writes(out.writes)

    async def on_object(self, event: m.ObjectEvent) -> None:
        if event.status_only and event.type == "DELETED":
            return  # the tombstone of a deleted object's status: its deletion comes on its own subject
        if not event.status_only:  # experiments run on spec and metadata; their status is written after them
            await self.effects.room()
            self.publish(self.core.on_object(event, time.time()))  # skips ORCHESTRATED kinds
        await self.flows.on_object(event)  # Schedules and Workflows follow their objects' status
        await self.publish_schedules(self.schedules.on_object(event, time.time()))
        if event.kind == "Schedule" or event.uid in self.schedules.children:
            self._wake.set()  # its next fire or a child's end may come before the timers wake

    async def on_results(self, batches: list[m.ResultBatch]) -> set[int]:
        """One fetch of results, folded into the core in order, their effects sent together; those
        whose effects could not be stored are returned, to be redelivered (the others are acked).
        """
        stored = [self._results_stored(self.publish(self.core.on_results(b, time.time())), b) for b in batches]
        outcomes = await asyncio.gather(*stored, return_exceptions=True)
        return {i for i, outcome in enumerate(outcomes) if isinstance(outcome, BaseException)}

    async def _results_stored(self, effects: asyncio.Future[None], batch: m.ResultBatch) -> None:
        await effects
        await self.flows.on_results(batch)  # Workflow Tasks' results (their own lock keeps their order)

    def task_node(self) -> str | None:
        return self.core.task_node()

    async def load_memory(self) -> int:
        stored = await (await self.bus.bucket(subjects.SCHEDULER)).list(subjects.MEMORY_KEYS)
        memories = [s.value for s in stored if isinstance(s.value, m.ExperimentMemory)]
        self.core.load(memories)
        return len(memories)

    async def follow_objects(self) -> None:
        """Replay every object, then drop memories of objects that are gone, then follow changes."""
        caught_up = asyncio.Event()
        follow = asyncio.ensure_future(
            self.bus.replay_and_follow(subjects.OBJECTS, self.on_object, caught_up=caught_up)
        )
        try:
            await asyncio.wait([follow, asyncio.ensure_future(caught_up.wait())], return_when=asyncio.FIRST_COMPLETED)
            if caught_up.is_set():
                self.core.forget_unclaimed()
                await self.publish(Outputs())  # purges the memories of objects gone meanwhile
                self.replayed.set()
                self.schedules.ready, self.schedules.started_at = True, time.time()
            await follow
        finally:
            follow.cancel()

    async def consume_results(self) -> None:
        await self.replayed.wait()  # a result must find its experiment: only after the replay
        await self.bus.consume_batches(subjects.RESULTS, self.on_results, durable="scheduler-results")

    async def follow_targets(self, ready: asyncio.Event) -> None:
        async for entry in (await self.bus.bucket(subjects.TARGETS)).follow():
            if entry is None:
                ready.set()
            else:
                self.core.on_target(entry.key, entry.value)

    async def renew_leases(self) -> None:
        while True:
            await self.outbox.send_leases()
            await asyncio.sleep(self.lease_ttl / 3)

    async def timers(self) -> None:
        while True:
            now = time.time()
            self.publish(self.core.tick(now))
            await self.publish_schedules(self.schedules.tick(now))
            self._wake.clear()
            self.metrics.set_experiments(self.core.phase_counts(now))
            self.metrics.cm_schedules.set_all(
                by_namespace(
                    str((s.obj.get("metadata") or {}).get("namespace") or "") for s in self.schedules.schedules.values()
                )
            )
            now = time.time()
            nxt = min(
                (t for t in (self.core.next_wakeup(now), self.schedules.next_wakeup(now)) if t is not None),
                default=None,
            )
            delay = 1.0 if nxt is None else max(0.0, min(1.0, nxt - time.time()))
            if delay <= 0:
                await asyncio.sleep(0)  # never spin without yielding, whatever the core answers
                continue
            self._sleep_until = time.time() + delay
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass
            self._sleep_until = 0.0


def selection_config(
    scope: cbconfig.ControllerScope, guard: cbconfig.TargetGuard | None = None, max_targets: int = 5000
) -> SelectionConfig:
    return SelectionConfig(
        cluster_scoped=scope.cluster_scoped,
        target_namespace=scope.target_namespace,
        enable_filter_namespace=scope.enable_filter_namespace,
        guard=guard or cbconfig.TargetGuard(),
        max_targets=max_targets,
    )


def load_signer(path: str | None) -> signing.Signer | None:
    """The scheduler's signing key: --signing-key, else scheduler.key in the keys dir."""
    if signing.unsigned_mode():
        log.warning("UNSIGNED MODE (CHAOSBUS_UNSIGNED=1): node commands and leases are sent unsigned")
        return None
    key = signing.keys_dir() / "scheduler.key" if path is None else Path(path)
    try:
        signer = signing.Signer.from_file(key)
    except (OSError, ValueError) as e:
        raise SystemExit(f"scheduler: no signing key ({e}); `chaosbus keys generate DIR` creates one") from None
    log.info("signing with", key=str(key), kid=signer.kid)
    return signer


async def main(args: argparse.Namespace) -> None:
    metrics = SchedulerMetrics()
    signer = load_signer(args.signing_key)
    config = selection_config(service.scope(args), service.guard(args), args.max_targets)
    ready = service.Readiness()
    ready.pending(LEADER, "the leader lease not read yet")
    async with service.connected(args, "chaosbus-scheduler", metrics.registry, ready) as (bus, port):
        try:
            served = serve(
                bus,
                metrics,
                config,
                readiness=ready,
                instance=args.instance,
                leader_ttl=args.leader_ttl,
                metrics_port=port,
                cluster_injector=args.cluster_injector,
                signer=signer,
                command_ttl=args.command_ttl,
            )
            await service.run_forever(served, service.hold(bus))  # a standby, too, ends with its connection
        except LostLeadership:
            # Start over as a standby in a fresh process (the supervisor restarts it): nothing of
            # the old leader's memory or subscriptions can leak into the next term.
            raise SystemExit(3) from None


async def serve(
    bus: busmod.Bus,
    metrics: SchedulerMetrics,
    config: SelectionConfig,
    *,
    instance: str,
    signer: signing.Signer | None,
    leader_ttl: float = LEADER_TTL_S,
    metrics_port: int = 0,
    cluster_injector: bool = False,
    command_ttl: float = COMMAND_TTL_S,
    readiness: service.Readiness | None = None,
) -> None:
    """Wait for the leader lease, then act until it is lost (LostLeadership ends everything).
    Ready as a standby that reads the lease, and as the leader once it has replayed the objects.
    """
    readyz = readiness or service.Readiness()
    lead = Leadership(holder=instance, ttl_s=leader_ttl, session=uuid.uuid4().hex)
    election = Election(await bus.bucket(subjects.SCHEDULER), lead)

    def standing(outcome: str) -> None:
        if outcome == "unreachable":
            readyz.pending(LEADER, "standby: the leader lease cannot be read")
        else:
            readyz.done(LEADER)

    await election.acquire(standing)
    readyz.pending(LEADER, "leader: replaying the objects")
    sched = Scheduler(
        bus,
        SchedulerCore(config, cluster_injector=cluster_injector),
        metrics,
        signer=signer,
        lease_ttl=settings.current().lease_seconds,
        command_ttl=command_ttl,
    )
    ready = asyncio.Event()
    targets = asyncio.ensure_future(sched.follow_targets(ready))
    keep = asyncio.ensure_future(election.keep())
    try:
        metrics.leader.set(1)
        # The targets' follower failing before its snapshot (JetStream refusing the subscription)
        # ends the scheduler too: waiting for a snapshot that will never come would leave it up,
        # unready and deaf.
        snapshot = asyncio.ensure_future(ready.wait())
        try:
            await asyncio.wait([snapshot, keep, targets], return_when=asyncio.FIRST_COMPLETED)
        finally:
            snapshot.cancel()
        for loop in (keep, targets):
            if loop.done():
                loop.result()
        remembered = await sched.load_memory()  # before acting: memory beats a lagging status
        log.info(
            "scheduler ready",
            instance=instance,
            metrics_port=metrics_port,
            pods=len(sched.core.pods),
            remembered=remembered,
            cluster_scoped=config.cluster_scoped,
            target_namespace=config.target_namespace,
            filter_namespaces=config.enable_filter_namespace,
            protected_namespaces=sorted(config.guard.protected_namespaces),
            allow_host_network_testing=config.guard.allow_host_network_testing,
            cluster_injector=cluster_injector,
        )
        # The kill-switch keys where this machine keeps them (local mode: the state dir's), so that
        # an apply is refused while the injectors would refuse it; without them, advisory.
        trust = None
        if not signing.unsigned_mode():
            try:
                trust = signing.Trust.from_dir(signing.keys_dir())
            except (OSError, ValueError) as e:
                log.warning("kill-switch keys not read: the triggers read its state unverified", error=str(e))
        triggers = Triggers(bus, ObjectStore(await bus.bucket(subjects.OBJECT_STORE)), trust)
        await service.run_forever(
            targets,
            keep,
            sched.follow_objects(),
            sched.consume_results(),
            sched.timers(),
            sched.renew_leases(),
            sched.flows.run(sched.replayed),
            triggers.serve(),
            readyz.once(sched.replayed, LEADER),
        )
    finally:
        metrics.leader.set(0)
        sched.effects.cancel()  # a scheduler that is no longer the leader sends nothing more
        targets.cancel()
        keep.cancel()
