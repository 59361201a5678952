"""The scheduler's pure core: experiments, their selected targets and desired phase in, batched
per-node commands and per-experiment decisions out. Driven by the app with an injected clock.

Memory per target is (phase, in-flight op, retry time). A restarted scheduler resumes from its
own memory (KV `scheduler`, see memory.py) loaded before it acts, else from the object's status;
apply and recover are idempotent, so re-sending an op whose result was lost is harmless.
"""

from __future__ import annotations

import itertools
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from chaosbus.common import messages as m
from chaosbus.common import subjects
from chaosbus.common.crd import NOT_EXECUTED, ORCHESTRATED, ChaosObject, InvalidObject, decode_object_json, kinds
from chaosbus.common.crd.meta import is_paused
from chaosbus.common.crd.objects import decode_metadata
from chaosbus.common.crd.status import INJECTED, NOT_INJECTED, RUN, STOP
from chaosbus.common.objects import parse_rfc3339
from chaosbus.scheduler import memory, plan
from chaosbus.scheduler import phase as ph
from chaosbus.scheduler import selection as sel
from chaosbus.scheduler.memory import Experiment, TargetState

LEASE_ANNOTATION = "chaosbus.io/lease"  # "none": this experiment's faults are not held by the lease
INFLIGHT_TIMEOUT_S = 30.0
FULL_RECONCILE_S = 5.0  # a safety net: every experiment is reconciled at least this often
SELECTION_RETRY_S = 5.0
MAX_BACKOFF_S = 30.0


@dataclass
class Outputs:
    commands: list[m.NodeCommand] = field(default_factory=list)
    decisions: list[m.ExperimentDecision] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def extend(self, other: Outputs) -> None:
        self.commands += other.commands
        self.decisions += other.decisions
        self.errors += other.errors


class SchedulerCore:
    def __init__(
        self,
        config: sel.SelectionConfig | None = None,
        rng: random.Random | None = None,
        *,
        cluster_injector: bool = False,
    ) -> None:
        self.config = config or sel.SelectionConfig()
        self.cluster_injector = cluster_injector  # API-level faults go to `injector --cluster`
        self.rng = rng or random.SystemRandom()
        self.pods: dict[str, m.TargetPod] = {}
        self.namespaces: dict[str, m.TargetNamespace] = {}
        self.nodes: dict[str, m.TargetNode] = {}
        self.experiments: dict[str, Experiment] = {}
        self._seq = itertools.count(1)
        self.stored: dict[str, m.ExperimentMemory] = {}  # loaded on start, not yet claimed by an object
        self._saved: dict[str, m.ExperimentMemory] = {}  # last written per experiment
        self._dirty: set[str] = set()
        self._last_full = float("-inf")  # the last tick that reconciled every experiment
        self.refused: dict[str, tuple[int, bool, str]] = {}  # uid -> what was last said about an undecodable object

    # --- memory (KV `scheduler`) ----------------------------------------------------------------

    def load(self, memories: list[m.ExperimentMemory]) -> None:
        """What a previous instance wrote: used when each experiment's object is first seen."""
        for mem in memories:
            self.stored[mem.experiment_uid] = self._saved[mem.experiment_uid] = mem

    def forget_unclaimed(self) -> None:
        """After the object replay: memories of objects that no longer exist are dropped."""
        for uid in self.stored:
            if uid not in self.experiments:
                self._dirty.add(uid)
        self.stored.clear()

    def unsaved(self, uid: str) -> None:
        """A write of `take_changes` failed: it is due again."""
        self._saved.pop(uid, None)
        self._dirty.add(uid)

    def take_changes(self) -> list[tuple[str, m.ExperimentMemory | None]]:
        """Memories to write since the last call (None: delete), only those that really changed."""
        out: list[tuple[str, m.ExperimentMemory | None]] = []
        for uid in sorted(self._dirty):
            exp = self.experiments.get(uid)
            snap = memory.snapshot(exp) if exp is not None else None
            if snap != self._saved.get(uid):
                out.append((uid, snap))
                if snap is None:
                    del self._saved[uid]
                else:
                    self._saved[uid] = snap
        self._dirty.clear()
        return out

    # --- inputs -------------------------------------------------------------------------------

    def on_target(self, key: str, value: m.Message | None) -> None:
        kind, _, rest = key.partition(".")
        tables: dict[str, dict[str, Any]] = {"pod": self.pods, "namespace": self.namespaces, "node": self.nodes}
        table = tables.get(kind)
        if table is None:  # a projection this scheduler does not know (a newer watcher's): ignore it
            return
        name = rest.replace(".", "/", 1) if kind == "pod" else rest
        if value is None:
            table.pop(name, None)
        else:
            table[name] = value

    def on_object(self, event: m.ObjectEvent, now: float) -> Outputs:
        try:
            return self._on_object(event, now)
        except Exception as e:  # e.g. a creationTimestamp no clock can hold: this experiment fails, alone
            out = self.fail(event.uid, f"{type(e).__name__}: {e}", now)
            return out if out.errors else self._refuse(event, f"{type(e).__name__}: {e}", now)

    def _on_object(self, event: m.ObjectEvent, now: float) -> Outputs:
        if event.kind in NOT_EXECUTED or event.kind in ORCHESTRATED:  # not experiments with targets
            return Outputs()
        if event.too_large:
            return self._refuse(event, f"the object ({event.too_large} bytes) is larger than NATS max_payload", now)
        known = self.experiments.get(event.uid)
        try:
            # The status is read once, to resume; every later event (mostly status writes) skips it.
            obj = decode_object_json(event.object, with_status=known is None or known.targets is None)
        except (InvalidObject, msgspec.DecodeError) as e:
            return self._refuse(event, str(e), now)
        if kinds.not_run(obj.kind, obj.spec) is not None:  # the recorder marks it not supported
            return Outputs()
        exp = self.experiments.get(obj.metadata.uid)
        if exp is None:
            mem = self.stored.pop(obj.metadata.uid, None)
            if event.type == "DELETED" and mem is None:
                return Outputs()
            if mem is not None:  # a deletion seen only now still recovers what was remembered
                exp = memory.restore(mem, obj, self.pods)
            else:
                exp = Experiment(obj=obj, created_at=parse_rfc3339(obj.metadata.creation_timestamp))
            self.experiments[exp.uid] = exp
            if mem is not None:
                exp.gone = event.type == "DELETED"
                memory.expire_stale_inflight(exp, _op(self.desired(exp, now)), INFLIGHT_TIMEOUT_S, now)
            self._dirty.add(exp.uid)  # later events (mostly status writes) change the memory only via reconcile
        exp.obj = obj
        exp.gone = exp.gone or event.type == "DELETED"
        if exp.targets is None and obj.status and obj.status.experiment.container_records:
            exp.targets = self._resume(obj)
            self._dirty.add(exp.uid)
        return self.reconcile(exp, now)

    def _refuse(self, event: m.ObjectEvent, error: str, now: float) -> Outputs:
        """An object that cannot be run as it is (cluster mode stores what the API server admits):
        Failed with the reason in its status, and, being never injected, free to go once deleted.
        """
        where = f"{event.kind}/{event.namespace}/{event.name}: {error}"
        if event.type == "DELETED":
            self.refused.pop(event.uid, None)
            return Outputs()
        try:
            meta = decode_metadata(event.object)
        except msgspec.DecodeError:
            return Outputs(errors=[where])
        generation = meta.get("generation")
        decision = m.ExperimentDecision(
            experiment_uid=event.uid,
            generation=generation if isinstance(generation, int) else 1,
            kind=event.kind,
            namespace=event.namespace,
            name=event.name,
            desired_phase="Stop",
            selection_error=f"the object cannot be run: {error}",
            deleting=bool(meta.get("deletionTimestamp")),
            at=now,
        )
        seen = (decision.generation, decision.deleting, error)
        if self.refused.get(event.uid) == seen:  # most events are the echoes of our own status writes
            return Outputs()
        self.refused[event.uid] = seen
        return Outputs(decisions=[decision], errors=[where])

    def on_results(self, batch: m.ResultBatch, now: float) -> Outputs:
        exp = self.experiments.get(batch.experiment_uid)
        if exp is None or exp.targets is None:
            return Outputs()
        by_key = {t.key: t for t in exp.targets}
        for r in batch.results:
            t = by_key.get((r.target_id, r.selector_key))
            if t is None:
                continue
            if t.inflight != r.op:
                if r.op == "recover" and r.ok and t.inflight is None and t.phase == INJECTED:
                    # The node recovered it on its own (kill switch, lease, target gone): an apply
                    # follows if still wanted, and the node says whether it may happen again.
                    t.phase = NOT_INJECTED
                continue
            t.inflight = None
            t.uncertain = False
            if r.ok:
                t.phase, t.attempts, t.permanent_error = (INJECTED if r.op == "apply" else NOT_INJECTED), 0, ""
            else:
                t.attempts += 1
                t.retry_at = now + min(MAX_BACKOFF_S, 2.0 ** (t.attempts - 1))
                t.permanent_error = "" if r.retryable else r.message
        self._dirty.add(exp.uid)
        return self.reconcile(exp, now)

    def tick(self, now: float) -> Outputs:
        """Reconcile the experiments whose timer is due (every one, every FULL_RECONCILE_S): events
        reconcile their own experiment, so a burst of N events costs N reconciles, not N squared.
        """
        out = Outputs()
        full = now - self._last_full >= FULL_RECONCILE_S or now < self._last_full
        if full:
            self._last_full = now
        for exp in list(self.experiments.values()):
            if exp.failure:
                continue
            if full or (exp.due_at is not None and exp.due_at <= now):
                out.extend(self.reconcile(exp, now))
        return out

    def next_wakeup(self, now: float) -> float | None:
        future = [e.due_at for e in self.experiments.values() if e.due_at is not None and e.due_at > now]
        return min(future) if future else None

    def _due(self, exp: Experiment, now: float) -> float | None:
        times: list[float] = []
        end = ph.stop_time(exp.created_at, exp.duration())
        if end is not None and end > now:
            times.append(end)
        if exp.targets is None and exp.selection_error and not exp.deleting:
            times.append(exp.next_selection)
        for t in exp.targets or []:
            if t.inflight:
                times.append(t.inflight_at + INFLIGHT_TIMEOUT_S)
            elif t.retry_at > now:
                times.append(t.retry_at)
        # Only future times: a deadline already handled (a selection retry while paused, an in-flight
        # op whose timeout passed with nothing to re-send) would otherwise make the caller spin.
        future = [t for t in times if t > now]
        return min(future) if future else None

    # --- reconcile ----------------------------------------------------------------------------

    def desired(self, exp: Experiment, now: float) -> str:
        return ph.desired_phase(
            deleting=exp.deleting,
            one_shot=plan.one_shot(exp.obj),
            created_at=exp.created_at,
            duration_s=exp.duration(),
            paused=is_paused(exp.obj.metadata),
            now=now,
        )

    def reconcile(self, exp: Experiment, now: float) -> Outputs:
        """Commands and a decision for one experiment; whatever goes wrong in here fails it alone."""
        try:
            out = self._reconcile(exp, now)
        except Exception as e:
            return self.fail(exp.uid, f"{type(e).__name__}: {e}", now)
        if exp.failure:  # it ran again (its object changed): no longer failed
            exp.failure = ""
            self._dirty.add(exp.uid)
        return out

    def fail(self, uid: str, reason: str, now: float) -> Outputs:
        """Mark an experiment Failed (nothing of this reconcile is sent): its decision says why.
        Timers leave it alone; its next object event (an edit, a deletion) tries again.
        """
        exp = self.experiments.get(uid)
        if exp is None:
            return Outputs()
        exp.failure, exp.due_at = reason[:1000], None
        last, md = exp.last_decision, exp.obj.metadata
        decision = m.ExperimentDecision(
            experiment_uid=uid,
            generation=md.generation,
            kind=exp.obj.kind,
            namespace=md.namespace,
            name=md.name,
            desired_phase=last.desired_phase if last is not None else RUN,  # type: ignore[arg-type]
            records=None,
            selection_error=exp.selection_error,  # records once sent stay; none is the small answer
            paused=is_paused(md),
            deleting=exp.deleting,
            at=now,
            failure=exp.failure,
        )
        out = Outputs(errors=[f"{exp.obj.kind}/{md.namespace}/{md.name}: {exp.failure}"])
        if last is None or _differs(last, decision):
            exp.last_decision = decision
            out.decisions.append(decision)
        return out

    def _reconcile(self, exp: Experiment, now: float) -> Outputs:
        out = Outputs()
        # No wait for the records finalizer: local mode's admission stores it with the object and
        # the recorder adds it to every live experiment it does not find it on, so it is known to
        # come. Recovery never depends on it: what was sent is in this scheduler's memory (written
        # before the commands), and a deletion that beats the finalizer still recovers from there.
        desired = self.desired(exp, now)
        if exp.targets is None and desired == RUN and now >= exp.next_selection:
            self._select(exp, now)
        if exp.targets is not None:
            out.commands = self._commands(exp, desired, now)
        decision = self._decision(exp, desired, now)
        if exp.last_decision is None or _differs(exp.last_decision, decision):
            exp.last_decision = decision
            out.decisions.append(decision)
        if out.commands or out.decisions:
            self._dirty.add(exp.uid)
        if exp.gone and all(t.phase == NOT_INJECTED and not t.inflight and not t.uncertain for t in exp.targets or []):
            del self.experiments[exp.uid]
            self._dirty.add(exp.uid)
        exp.due_at = self._due(exp, now)
        return out

    def _select(self, exp: Experiment, now: float) -> None:
        world = sel.World(pods=self.pods, namespaces=self.namespaces, nodes=self.nodes)
        try:
            chosen = plan.select(exp.obj, world, self.config, self.rng)
        except sel.SelectionError as e:
            exp.selection_error = str(e)
            exp.next_selection = now + SELECTION_RETRY_S
            return
        exp.selection_error = ""
        exp.targets = [TargetState(target=s) for s in chosen]

    def _resume(self, obj: ChaosObject) -> list[TargetState]:
        """Targets from a status written before a restart; pods that vanished stay as records."""
        assert obj.status is not None and obj.status.experiment.container_records is not None
        states = []
        for rec in obj.status.experiment.container_records:
            parts = rec.id.split("/")
            pod = self.pods.get("/".join(parts[:2])) or m.TargetPod(uid="", namespace=parts[0], name=parts[1])
            container = next((c for c in pod.containers if len(parts) > 2 and c.name == parts[2]), None)
            if len(parts) > 2 and container is None:
                container = m.ContainerRef(name=parts[2])
            phase = INJECTED if rec.phase.startswith(INJECTED) else NOT_INJECTED
            states.append(TargetState(target=plan.Selected(rec.id, rec.selector_key, pod, container), phase=phase))
        return states

    def _commands(self, exp: Experiment, desired: str, now: float) -> list[m.NodeCommand]:
        assert exp.targets is not None
        want = INJECTED if desired == RUN else NOT_INJECTED
        everyone = plan.Everyone(t.target for t in exp.targets)
        by_node: dict[str, list[m.TargetAction]] = {}
        for t in exp.targets:
            if t.inflight and now - t.inflight_at < INFLIGHT_TIMEOUT_S:
                continue
            if t.inflight:
                t.uncertain = True  # its result was lost, not necessarily its effect: re-send what is wanted
            t.inflight = None
            if (t.phase == want and not t.uncertain) or now < t.retry_at or (t.permanent_error and want == INJECTED):
                continue
            op = _op(desired)
            node = plan.route(exp.obj, t.target, cluster_injector=self.cluster_injector)
            nodes = [node] if node else self._all_nodes()
            if not nodes:
                continue
            t.inflight, t.inflight_at = op, now
            for node in nodes:
                by_node.setdefault(node, []).append(self._action(exp, t, op, everyone))
        end = ph.stop_time(exp.created_at, exp.duration())
        return [self._command(exp, node, actions, now, end) for node, actions in sorted(by_node.items())]

    def task_node(self) -> str | None:
        """Where a Workflow Task runs: as a Pod by the cluster injector in cluster mode, else as a
        process on the first node with an injector (None: no injector known yet).
        """
        if self.cluster_injector:
            return subjects.CLUSTER_NODE
        nodes = self._all_nodes()
        return nodes[0] if nodes else None

    def _all_nodes(self) -> list[str]:
        """Where to send a recover whose pod (and so node) is no longer known: every node. Each
        injector finds the target gone or recovers it; recover is idempotent.
        """
        return sorted(set(self.nodes) | {p.node for p in self.pods.values() if p.node})

    def _action(self, exp: Experiment, t: TargetState, op: str, everyone: list[plan.Selected]) -> m.TargetAction:
        s = t.target
        return m.TargetAction(
            target_id=s.record_id,
            selector_key=s.selector_key,
            op=op,  # type: ignore[arg-type]
            pod_uid=s.pod.uid,
            namespace=s.pod.namespace,
            pod_name=s.pod.name,
            container_ids=plan.container_ids(s, self.pods.get(s.pod.key)),
            fault=plan.fault_for(exp.obj, s, everyone),
        )

    def _command(
        self, exp: Experiment, node: str, actions: list[m.TargetAction], now: float, end: float | None
    ) -> m.NodeCommand:
        md = exp.obj.metadata
        return m.NodeCommand(
            command_id=f"{md.uid}.{uuid.uuid4().hex[:12]}",
            experiment_uid=md.uid,
            generation=md.generation,
            kind=exp.obj.kind,
            namespace=md.namespace,
            name=md.name,
            node=node,
            issued_at=now,
            deadline=None if plan.one_shot(exp.obj) else end,
            actions=actions,
        )

    def _decision(self, exp: Experiment, desired: str, now: float) -> m.ExperimentDecision:
        md = exp.obj.metadata
        refs = (
            None
            if exp.targets is None
            else [
                m.RecordRef(
                    id=t.target.record_id,
                    selector_key=t.target.selector_key,
                    node=plan.route(exp.obj, t.target, cluster_injector=self.cluster_injector),
                )
                for t in exp.targets
            ]
        )
        return m.ExperimentDecision(
            experiment_uid=md.uid,
            generation=md.generation,
            kind=exp.obj.kind,
            namespace=md.namespace,
            name=md.name,
            desired_phase=desired,  # type: ignore[arg-type]
            records=refs,
            selection_error=exp.selection_error,
            paused=is_paused(md),
            deleting=exp.deleting,
            at=now,
        )

    def leases(self, now: float, ttl_s: float, holder: str, nodes: set[str] | None = None) -> list[m.NodeLease]:
        """Per node, the experiments whose faults this scheduler still wants in force there (the
        dead-man lease, renewed every ttl/3); `nodes` limits the answer to those nodes.
        """
        held: dict[str, set[str]] = {n: set() for n in self._all_nodes()}
        if self.cluster_injector:
            held[subjects.CLUSTER_NODE] = set()
        exempt: dict[str, set[str]] = {}
        for exp in self.experiments.values():
            if exp.targets is None or plan.one_shot(exp.obj) or self.desired(exp, now) != RUN:
                continue
            where = {plan.route(exp.obj, t.target, cluster_injector=self.cluster_injector) for t in exp.targets}
            if "" in where:  # a target whose node is unknown: every node may hold it
                where = (where - {""}) | set(held)
            for node in where:
                held.setdefault(node, set()).add(exp.uid)
                if exp.obj.metadata.annotations.get(LEASE_ANNOTATION) == "none":
                    exempt.setdefault(node, set()).add(exp.uid)
        return [
            m.NodeLease(
                node=n,
                holder=holder,
                issued_at=now,
                ttl_s=ttl_s,
                held=sorted(held[n]),
                exempt=sorted(exempt.get(n, ())),
            )
            for n in sorted(held)
            if nodes is None or n in nodes
        ]

    def phase_counts(self, now: float) -> dict[tuple[str, str, str], int]:
        """Experiments by (namespace, kind, phase) for the metrics gauges."""
        counts: dict[tuple[str, str, str], int] = {}
        for exp in self.experiments.values():
            key = (exp.obj.metadata.namespace, exp.obj.kind, _ui_phase(exp, self.desired(exp, now)))
            counts[key] = counts.get(key, 0) + 1
        return counts


def _op(desired: str) -> str:
    return "apply" if desired == RUN else "recover"


def _ui_phase(exp: Experiment, desired: str) -> str:
    if exp.deleting:
        return "deleting"
    if is_paused(exp.obj.metadata) and not plan.one_shot(exp.obj):
        return "paused"
    if exp.targets is None:
        return "failed" if exp.selection_error else "injecting"
    phases = {t.phase for t in exp.targets}
    if desired == STOP and phases <= {NOT_INJECTED}:
        return "finished"
    if desired == RUN and phases == {INJECTED}:
        return "running"
    return "injecting" if desired == RUN else "recovering"


def _differs(a: m.ExperimentDecision, b: m.ExperimentDecision) -> bool:
    return msgspec.structs.replace(a, at=0.0) != msgspec.structs.replace(b, at=0.0)
