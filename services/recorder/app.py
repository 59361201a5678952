"""The recorder's edge: decisions and results in, status and finalizers written back to the
objects (local mode: the KV object store, with compare-and-set); object writes the scheduler
decides (Schedule children, orchestration status, Events) carried out; kinds accepted but not
executed marked NotSupported. Local mode keeps Events in the object store (kind Event, one per
object and reason, deleted with the object), where `chaosbus describe` finds them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from nats.aio.msg import Msg

from chaosbus.common import bus as busmod
from chaosbus.common import logging as cblog
from chaosbus.common import messages as m
from chaosbus.common import ordered, service, settings, subjects
from chaosbus.common.crd import NOT_EXECUTED, ORCHESTRATED, kinds
from chaosbus.common.crd.objects import decode_metadata
from chaosbus.common.objects import now_rfc3339
from chaosbus.common.store import Conflict, NotFound, Objects, ObjectStore, Refused
from chaosbus.recorder import core, events, writes
from chaosbus.recorder.events import KubeEvent
from chaosbus.recorder.lanes import Folded, Lanes
from chaosbus.recorder.metrics import RecorderMetrics
from chaosbus.recorder.sinks import EventSink, StoreEvents

log = cblog.get("recorder")
audit = cblog.get("audit")
SEEN_COMMANDS = 10_000
SEEN_EVENT_WRITES = 1_000
FOLLOWER_WAIT_S = 5.0  # an object change's writes the follower waits for before going on


class Recorder:
    def __init__(self, store: Objects, events: EventSink, metrics: RecorderMetrics, *, max_events: int) -> None:
        """`store`: where the objects live (local mode's KV bucket or the Kubernetes API); `events`:
        where Events go (the same store, or core/v1 Events through the API).
        """
        self.store, self.events, self.metrics, self.max_events = store, events, metrics, max_events
        self.latest: dict[str, m.ExperimentDecision] = {}
        # A redelivered batch (ack lost) must not count twice; JetStream dedup covers publishes only.
        self.seen_commands: OrderedDict[str, None] = OrderedDict()
        self.seen_event_writes: OrderedDict[str, None] = OrderedDict()  # a redelivery counts once
        # Deletions replayed at start are swept in one pass once the replay is over, not one by one.
        self.replayed = asyncio.Event()
        self.gone_in_replay: set[tuple[str, str]] = set()  # (namespace, uid)
        # An experiment's last decision as stored on its stream, for results that come before this
        # recorder has consumed it (a restart, or simply the other consumer being behind).
        self.fetch_decision: Callable[[str], Awaitable[m.ExperimentDecision | None]] | None = None

    def open_result(self, msg: Msg) -> m.ResultBatch | None:
        """A result batch as it arrived, or None (refused: counted, audited; or malformed)."""
        try:
            batch = busmod.decode(msg.data, m.ResultBatch)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as e:
            log.error("malformed message dropped", subject=msg.subject, error=str(e)[:500])
            return None
        why = core.subject_mismatch(batch, msg.subject)
        if why is not None:
            self._refuse_results(batch, batch.results, "subject", why)
            return None
        return batch

    def _refuse_results(self, batch: m.ResultBatch, results: list[m.TargetResult], reason: str, why: str) -> None:
        self.metrics.refused.labels(reason).inc(len(results) or 1)
        audit.warning(
            "results refused",
            audit=True,
            node=batch.node,
            command=batch.command_id,
            experiment=batch.experiment,
            experiment_uid=batch.experiment_uid,
            targets=[r.target_id for r in results][:20],
            reason=reason,
            why=why,
        )

    async def _decision(self, uid: str) -> m.ExperimentDecision | None:
        decision = self.latest.get(uid)
        if decision is None and self.fetch_decision is not None:
            decision = await self.fetch_decision(uid)
            if decision is not None:
                self.latest.setdefault(uid, decision)
        return decision

    async def _own_node_only(self, batch: m.ResultBatch) -> m.ResultBatch:
        """The batch without results about targets of another node (each refused, audited)."""
        kept, refused = core.foreign_results(batch, await self._decision(batch.experiment_uid))
        if refused:
            self._refuse_results(batch, refused, "node", f"node {batch.node!r} reported on targets another node holds")
        return kept

    async def on_object(self, event: m.ObjectEvent) -> None:
        if event.type == "DELETED":
            self.latest.pop(event.uid, None)
            if self.replayed.is_set():
                await self.forget_events(event.kind, event.namespace, event.name, event.uid)
            else:
                self.gone_in_replay.add((event.namespace, event.uid))
            return
        if event.kind in ORCHESTRATED:  # no finalizer: the scheduler deletes their children itself
            return
        if event.kind in NOT_EXECUTED:  # no finalizer either: nothing to recover
            await self._mutate(event.kind, event.namespace, event.name, core.not_supported)
            return
        try:
            meta = decode_metadata(event.object)
        except msgspec.DecodeError:
            return
        if core.finalizer_settled(meta):
            if event.type == "ADDED" and self.replayed.is_set() and core.admitted_with_finalizer(meta, event.object):
                # Stored with the finalizer (local mode's admission): told as if the recorder had
                # added it, as Chaos Mesh's controller does. Never for a replay at start.
                obj = msgspec.json.decode(event.object)
                if isinstance(obj, dict):
                    await self._finalizer_events(obj, removed=False)
            return  # most events are our own status writes: 250 KB at 1,000 targets, not decoded
        obj = msgspec.json.decode(event.object)
        if not isinstance(obj, dict):
            return
        why = kinds.not_run(event.kind, obj.get("spec") or {})
        if why is not None:  # a remote cluster's experiment: no finalizer, nothing will recover here
            await self._mutate(event.kind, event.namespace, event.name, lambda o: core.not_supported(o, why))
            return
        if core.finalizer_change(obj, self.latest.get(event.uid)) is None:
            return
        latest = self.latest.get(event.uid)
        removing = bool((obj.get("metadata") or {}).get("deletionTimestamp"))
        if removing:  # told first: once the finalizer is gone, so is the object (and, locally, its Events)
            await self._finalizer_events(obj, removed=True)
        try:
            result = await self.store.mutate(
                event.kind, event.namespace, event.name, lambda o: core.finalizer_change(o, latest)
            )
        except NotFound:
            return
        op = "add" if result is not None and not result["metadata"].get("deletionTimestamp") else "remove"
        if op == "add" and result is not None:
            await self._finalizer_events(result, removed=False)
        self.metrics.finalizers.labels(op).inc()
        log.info(
            "finalizer " + ("added" if op == "add" else "removed"),
            experiment=event.name,
            kind=event.kind,
            namespace=event.namespace,
        )

    async def _finalizer_events(self, about: core.Obj, *, removed: bool) -> None:
        for event in events.finalizer_events(removed=removed):
            await self.record_event(about, event)

    async def on_decision(self, d: m.ExperimentDecision) -> None:
        self.latest[d.experiment_uid] = d
        if await self._mutate(d.kind, d.namespace, d.name, lambda o: core.on_decision(o, d)):
            self.metrics.writes.labels(d.kind, "decision").inc()
        if d.deleting:  # the finalizer may be removable now
            await self._settle_finalizer(d.kind, d.namespace, d.name, d.experiment_uid)

    async def _settle_finalizer(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """A deleting object's finalizer, looked at on the stored object: our own status writes
        are not sent back to us (they are status changes only), so after a decision or results
        that may have recovered the last target, the recorder looks itself.
        """
        obj = await self.store.get(kind, namespace, name)
        if obj is not None:
            await self.on_object(
                m.ObjectEvent(
                    type="MODIFIED",
                    kind=kind,
                    namespace=namespace,
                    name=name,
                    uid=uid,
                    object=msgspec.Raw(msgspec.json.encode(obj)),
                )
            )

    async def on_results(self, batch: m.ResultBatch) -> None:
        """One result batch (tests and single deliveries)."""
        await self.on_result_batches([batch])

    async def on_result_batches(self, batches: list[m.ResultBatch]) -> set[int]:
        """Fold what one fetch brought into status, one write per experiment. Nothing is redelivered
        (the empty set): results whose records are not known yet find them through `fetch_decision`.
        """
        groups: dict[str, list[m.ResultBatch]] = {}
        for b in batches:
            if b.command_id in self.seen_commands or b.kind in ORCHESTRATED:
                continue  # a Task's result: the scheduler folds it into the WorkflowNode's status
            groups.setdefault(b.experiment_uid, []).append(b)
        # Different experiments' writes are independent (one object each): in flight together.
        await asyncio.gather(*(self._write_results(group) for group in groups.values()))
        return set()

    async def _write_results(self, group: list[m.ResultBatch]) -> None:
        """One experiment's batches as one status write."""
        group = [await self._own_node_only(b) for b in group]
        first = group[0]
        for batch in group:
            for r in batch.results:
                self.metrics.results.labels(batch.kind, r.op, "ok" if r.ok else "failed").inc()
                if not r.ok:
                    log.warning("target failed", experiment=batch.name, target=r.target_id, op=r.op, error=r.message)
        try:
            await self._fold_results(group)
        except core.RecordsNotYetKnown:
            # Decisions and results travel on two streams, but the scheduler stores a decision
            # before it sends the commands it decided: the decision that made these records is on
            # its stream already, only not consumed here yet. Read it now instead of waiting.
            fetch = self.fetch_decision
            decision = await fetch(first.experiment_uid) if fetch is not None else None
            if decision is not None:
                await self.on_decision(decision)
            try:
                await self._fold_results(group)
            except core.RecordsNotYetKnown:  # a decision that never named these targets: nothing to fold into
                self.metrics.errors.labels("results_without_records").inc()
                log.error(
                    "results for records no decision made; dropped",
                    experiment=first.name,
                    commands=[b.command_id for b in group],
                )
        for batch in group:
            self.seen_commands[batch.command_id] = None  # only once handled: a failed write is redelivered
        while len(self.seen_commands) > SEEN_COMMANDS:
            self.seen_commands.popitem(last=False)

    async def _fold_results(self, group: list[m.ResultBatch]) -> None:
        first, now = group[0], now_rfc3339()
        decision = self.latest.get(first.experiment_uid)
        written = await self._mutate(
            first.kind,
            first.namespace,
            first.name,
            lambda o: core.on_results_many(o, group, now=now, max_events=self.max_events, decision=decision),
        )
        if written is not None:
            self.metrics.writes.labels(first.kind, "results").inc()
            if (written.get("metadata") or {}).get("deletionTimestamp"):
                await self._settle_finalizer(first.kind, first.namespace, first.name, first.experiment_uid)

    async def on_write(self, w: m.ObjectWrite) -> None:
        """Carry out one object write the scheduler decided; each op is idempotent (redelivery-safe)."""
        try:
            outcome = await self._carry_out(w)
        except ValueError as e:  # a malformed write never becomes valid on redelivery
            self.metrics.errors.labels("bad_write").inc()
            log.error("object write refused", op=w.op, kind=w.kind, namespace=w.namespace, name=w.name, error=str(e))
            return
        self.metrics.writes.labels(w.kind, w.op).inc()
        log.info("object " + outcome, op=w.op, kind=w.kind, namespace=w.namespace, name=w.name, reason=w.reason)

    async def record_event(self, about: core.Obj, event: KubeEvent) -> None:
        self.metrics.event(event.type, event.reason, str((about.get("metadata") or {}).get("namespace")))
        await self.events.record(about, event)

    async def forget_events(self, kind: str, namespace: str, name: str, uid: str) -> None:
        await self.events.forget(kind, namespace, name, uid)

    async def sweep_events(self) -> None:
        """Once the replay is over: the Events of objects deleted while no recorder ran, in one pass."""
        await self.replayed.wait()
        gone, self.gone_in_replay = self.gone_in_replay, set()
        if gone:
            await self.events.sweep(gone)

    async def _spawned(self, w: m.ObjectWrite) -> None:
        """The Event Chaos Mesh records on the owner of a new child: `Spawned` on a Schedule,
        `ChaosCRCreated` / `StatusCheckCreated` on a WorkflowNode.
        """
        child = writes.wanted_object(w)
        for ref in (child.get("metadata") or {}).get("ownerReferences") or []:
            event = writes.spawned_event(str(ref.get("kind")), w.kind, w.name)
            if event is not None:
                owner = {
                    "apiVersion": ref.get("apiVersion"),
                    "kind": ref.get("kind"),
                    "metadata": {"name": ref.get("name"), "namespace": w.namespace, "uid": ref.get("uid")},
                }
                await self.record_event(owner, event)

    def _seen_event_write(self, write_id: str) -> None:
        self.seen_event_writes[write_id] = None
        while len(self.seen_event_writes) > SEEN_EVENT_WRITES:
            self.seen_event_writes.popitem(last=False)

    async def _carry_out(self, w: m.ObjectWrite) -> str:
        if w.op == "event":
            event = writes.event_of(w)
            if w.write_id in self.seen_event_writes:
                return "event already recorded"
            await self.record_event(writes.involved(w), event)
            self._seen_event_write(w.write_id)
            return "event recorded"
        if w.op == "create":
            wanted = writes.wanted_object(w)
            try:
                await self.store.create(wanted)
                outcome = "created"
            except Conflict:
                existing = await self.store.get(w.kind, w.namespace, w.name)
                if existing is None:
                    raise  # it vanished meanwhile: redelivered, created next time
                if not writes.same_object(existing, wanted):
                    raise ValueError(f"{w.kind}/{w.namespace}/{w.name} already exists and is not this child") from None
                outcome = "already there"
            # Also on a redelivered create: the first delivery may have created the child and then
            # failed (or lost its ack) before the owner's Event was written.
            if w.reason == "Spawned" and w.write_id not in self.seen_event_writes:
                await self._spawned(w)
                self._seen_event_write(w.write_id)
            return outcome
        if w.op == "delete":
            return "delete: " + await self.store.delete(w.kind, w.namespace, w.name, uid=w.uid)
        change = writes.status_change if w.op == "status" else writes.annotation_change
        changed = await self._mutate(w.kind, w.namespace, w.name, lambda o: change(o, w))
        return "written" if changed else "unchanged"

    async def _mutate(self, kind: str, namespace: str, name: str, fn: core.Mutation) -> core.Obj | None:
        """Change one object; every change worth telling becomes an Event (`events.for_write`).
        Returns the object as written, None when nothing was.
        """
        written: tuple[core.Obj, core.Obj] | None = None

        def tracking(obj: core.Obj) -> core.Obj | None:
            nonlocal written
            new = fn(obj)
            written = None if new is None else (obj, new)
            return new

        try:
            await self.store.mutate(kind, namespace, name, tracking)
        except NotFound:
            return None
        except Refused as e:  # the API's answer to this write: asking again would get it again
            self.metrics.errors.labels("refused_write").inc()
            log.error("write refused; given up", kind=kind, namespace=namespace, name=name, error=str(e))
            return None
        if written is None:
            return None
        before, after = written
        for event in events.for_write(before, after):
            await self.record_event(after, event)
        return after


def last_decision(bus: busmod.Bus) -> Callable[[str], Awaitable[m.ExperimentDecision | None]]:
    """How the recorder reads an experiment's last decision from the stream (kept per subject)."""

    async def fetch(uid: str) -> m.ExperimentDecision | None:
        found = await bus.last_messages(subjects.DECISIONS, subjects.decision_subject(uid))
        return found[-1] if found else None

    return fetch


async def main(args: argparse.Namespace) -> None:
    """One recorder for both modes: only where objects and Events live differs (`--kube`)."""
    metrics = RecorderMetrics()
    ready = service.Readiness()
    ready.pending("objects", "replaying the objects")
    for durable in ("recorder-phase", "recorder", "recorder-writes"):
        ready.pending(durable, f"consumer {durable} not bound yet")
    async with (
        service.connected(args, "chaosbus-recorder", metrics.registry, ready) as (bus, port),
        _backends(args, bus, ready) as (store, sink, where, watching),
    ):
        rec = Recorder(store, sink, metrics, max_events=settings.current().max_events)
        rec.fetch_decision = last_decision(bus)
        lanes = Lanes()
        results: Folded[m.ResultBatch] = Folded(lanes, rec.on_result_batches)

        def beside(_: object) -> bool:
            """Every message handled beside its consumer's loop, in its object's lane (acked once
            written): one object's waiting writes hold up none of another's."""
            return True

        async def on_decision(d: m.ExperimentDecision) -> None:
            await lanes.run((d.kind, d.namespace, d.name), lambda: rec.on_decision(d))

        async def on_write(w: m.ObjectWrite) -> None:
            await lanes.run((w.kind, w.namespace, w.name), lambda: rec.on_write(w))

        async def on_results(b: m.ResultBatch) -> None:
            await results.add((b.kind, b.namespace, b.name), b)

        async def on_object(e: m.ObjectEvent) -> None:
            """In the object's lane too, waited for a while: a change whose write waits longer (its
            object's writes failing) finishes behind the follower, which goes on to other objects."""
            if e.type == "DELETED":  # no write: told at once, so the replay's deletions are swept together
                await rec.on_object(e)
                return
            subject = subjects.object_subject(e.kind, e.namespace, e.name)
            done = lanes.behind((e.kind, e.namespace, e.name), lambda: ordered.handle(rec.on_object, e, subject))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), FOLLOWER_WAIT_S)

        log.info("recorder ready", objects=where, nats=args.nats, metrics_port=port)
        await service.run_forever(
            bus.replay_and_follow(
                subjects.OBJECTS, on_object, filter_subject=subjects.OBJECT_CHANGES, caught_up=rec.replayed
            ),
            lanes.failed(),
            ready.once(rec.replayed, "objects"),
            rec.sweep_events(),
            bus.consume(
                subjects.DECISIONS,
                on_decision,
                durable="recorder-phase",
                detach=beside,
                subscribed=lambda: ready.done("recorder-phase"),
            ),
            bus.consume(
                subjects.RESULTS,
                on_results,
                durable="recorder",
                detach=beside,
                opener=rec.open_result,
                subscribed=lambda: ready.done("recorder"),
            ),
            bus.consume(
                subjects.WRITES,
                on_write,
                durable="recorder-writes",
                detach=beside,
                subscribed=lambda: ready.done("recorder-writes"),
            ),
            service.hold(bus),
            *(loop() for loop in watching),
        )


Loop = Callable[[], Awaitable[None]]


@contextlib.asynccontextmanager
async def _backends(
    args: argparse.Namespace, bus: busmod.Bus, ready: service.Readiness
) -> AsyncIterator[tuple[Objects, EventSink, str, list[Loop]]]:
    """Where objects and Events live, and the loops that come with it (in cluster mode, /readyz
    following the Kubernetes API)."""
    if getattr(args, "kube", False) or getattr(args, "kubeconfig", None):
        from chaosbus.common import kubehealth
        from chaosbus.recorder import kube  # kubernetes-asyncio only where the API is used

        async with kube.backends(args.kubeconfig) as (store, sink, api):
            yield store, sink, "Kubernetes API", [lambda: kubehealth.watch_api(api, ready)]
        return
    local = ObjectStore(await bus.bucket(subjects.OBJECT_STORE))
    yield local, StoreEvents(local), "local object store", []
