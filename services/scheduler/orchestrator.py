"""The scheduler's pure core for Workflows and StatusChecks: object events in, object writes and
due HTTP probes out, with an injected clock.

It keeps the objects it has seen, overlaid with the writes it has asked for and not yet seen come
back (the recorder carries them out asynchronously), so a decision never rests on a view older
than its own last decision. Nothing else is remembered: after a restart the replayed objects say
everything, and the workflow machine names what it creates deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from chaosbus.common import messages as m
from chaosbus.common.crd.objects import decode_metadata
from chaosbus.common.crd.orchestration import StatusCheckHTTP, StatusCheckPrometheus
from chaosbus.common.objects import merge_patch, parse_rfc3339
from chaosbus.scheduler import statuscheck as sc
from chaosbus.scheduler import workflow as wf

Obj = dict[str, Any]
Key = tuple[str, str, str]  # kind, namespace, name
KINDS = ("Workflow", "WorkflowNode", "StatusCheck")


@dataclass(frozen=True)
class ProbeRequest:
    key: Key
    http: StatusCheckHTTP | None
    timeout_s: float
    started_at: float
    prometheus: StatusCheckPrometheus | None = None


@dataclass
class Outputs:
    writes: list[wf.Write] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    tasks: list[wf.TaskRun] = field(default_factory=list)

    def extend(self, other: Outputs) -> None:
        self.writes += other.writes
        self.errors += other.errors
        self.tasks += other.tasks


def relevant(event: m.ObjectEvent, obj: Obj) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return event.kind in KINDS or wf.LABEL_WORKFLOW in labels


def _workflow_member(raw: bytes) -> bool:
    try:
        labels = decode_metadata(raw).get("labels") or {}
    except msgspec.DecodeError:
        return False
    return isinstance(labels, dict) and wf.LABEL_WORKFLOW in labels


class Orchestrator:
    def __init__(self) -> None:
        self.seen: dict[Key, Obj] = {}
        self.created: dict[Key, Obj] = {}  # asked for, not seen yet
        self.patched: dict[Key, Obj] = {}  # our status patches, merged, over what was seen
        self.annotated: dict[Key, dict[str, str | None]] = {}
        self.deleted: set[Key] = set()  # asked to delete, deletion not seen yet
        self.checks: dict[Key, sc.CheckState] = {}
        self.probing: set[Key] = set()
        self.wakeups: dict[Key, float] = {}  # workflow -> when to look again
        self.tasks_sent: set[Key] = set()  # Task nodes whose command was sent (by this instance)
        self.workflows: set[Key] = set()
        self.members: dict[tuple[str, str], set[Key]] = {}  # (namespace, workflow) -> its nodes and children
        self.ready = False  # set once the replay of existing objects is complete

    # --- inputs ---------------------------------------------------------------------------------

    def on_object(self, event: m.ObjectEvent, now: float) -> Outputs:
        try:
            return self._on_object(event, now)
        except Exception as e:  # a malformed object (it never passed admission) is forgotten, never fatal
            self._forget((event.kind, event.namespace, event.name))
            return Outputs(errors=[f"{event.kind}/{event.namespace}/{event.name}: {type(e).__name__}: {e}"])

    def _on_object(self, event: m.ObjectEvent, now: float) -> Outputs:
        if event.kind not in KINDS and not _workflow_member(event.object):
            return Outputs()  # most events are experiments' status writes: 250 KB at 1,000 targets
        obj = msgspec.json.decode(event.object)
        if not isinstance(obj, dict) or not relevant(event, obj):
            return Outputs()
        key = (event.kind, event.namespace, event.name)
        gone = event.type == "DELETED"
        out = Outputs()
        if event.kind == "Workflow" and (gone or (obj.get("metadata") or {}).get("deletionTimestamp")):
            out.writes += self._teardown(key)
        if gone:
            self._forget(key)
        else:
            self.seen[key] = obj
            self.created.pop(key, None)
            self._index(key, obj)
        if event.kind == "StatusCheck" and not gone:
            out.errors += self._track_check(key, obj)
        if self.ready and not gone:
            out.extend(self._reconcile_for(key, now))
        return out

    def start(self, now: float) -> Outputs:
        """The replay is complete: act on everything seen, and delete what workflows deleted while
        no scheduler was running left behind (their nodes and faults).
        """
        self.ready = True
        out = Outputs()
        owners = {
            (k[1], name)
            for k, o in self.seen.items()
            if k[0] != "Workflow" and (name := _labels(o).get(wf.LABEL_WORKFLOW))
        }
        for ns, name in sorted(owners):
            if ("Workflow", ns, name) not in self.seen:
                out.writes += self._teardown(("Workflow", ns, name))
        out.extend(self.tick(now, everything=True))
        return out

    def tick(self, now: float, *, everything: bool = False) -> Outputs:
        out = Outputs()
        if not self.ready:
            return out
        for key, state in list(self.checks.items()):
            if sc.tick(state, now):
                out.writes += self._check_status(key, state, completing=True)
        for key in [k for k in self._workflow_keys() if everything or self.wakeups.get(k, now + 1) <= now]:
            try:
                out.extend(self._reconcile(key, now))
            except Exception as e:  # this workflow waits for its next event; the others go on
                self.wakeups.pop(key, None)
                out.errors.append(f"{'/'.join(map(str, key))}: {type(e).__name__}: {e}")
        return out

    def due_probes(self, now: float) -> list[ProbeRequest]:
        if not self.ready:
            return []
        due = []
        for key, state in self.checks.items():
            nxt = sc.next_probe(state)
            if key in self.probing or nxt is None or nxt > now:
                continue
            http, prom = state.spec.http, state.spec.prometheus
            if (http if state.spec.type == "HTTP" else prom) is None:
                continue
            self.probing.add(key)
            due.append(
                ProbeRequest(
                    key,
                    http if state.spec.type == "HTTP" else None,
                    float(state.spec.timeout_seconds),
                    now,
                    prometheus=prom if state.spec.type == "Prometheus" else None,
                )
            )
        return due

    def on_probe(self, req: ProbeRequest, ok: bool, now: float) -> Outputs:
        self.probing.discard(req.key)
        state = self.checks.get(req.key)
        out = Outputs()
        if state is None or state.completed:
            return out
        sc.fold(state, req.started_at, ok, now)
        out.writes += self._check_status(req.key, state, completing=state.completed)
        out.extend(self._reconcile_for(req.key, now))
        return out

    def on_task_result(self, namespace: str, node: str, result: m.TargetResult, now: float) -> Outputs:
        """A Task's command finished (or could not run): its result goes into the node's status as
        Chaos Mesh's `conditionalBranchesStatus.context`, then the workflow moves on.
        """
        key = ("WorkflowNode", namespace, node)
        if result.ok and result.exit_code is None:
            # "already done on this node": a re-sent command (after a restart) the injector did not
            # run twice; the first run's own result, still in the stream, is the one to use.
            return Outputs()
        current = self._effective(key)
        if current is None or ((current.get("status") or {}).get("conditionalBranchesStatus") or {}).get("context"):
            return Outputs()
        found: dict[str, Any] = {
            "exitCode": result.exit_code if result.exit_code is not None else -1,
            "stdout": result.stdout,
        }
        if not result.ok:
            found["error"] = result.message
        patch = {"conditionalBranchesStatus": {"context": [msgspec.json.encode(found).decode()]}}
        write = wf.Write(
            "status",
            "WorkflowNode",
            namespace,
            node,
            uid=current["metadata"].get("uid", ""),
            body=patch,
            reason="TaskFinished",
        )
        self._remember(write)
        out = Outputs(writes=[write])
        out.extend(self._reconcile_for(key, now))
        return out

    def workflow_phases(self) -> dict[str, int]:
        """Workflows by phase, for the metrics gauge: invalid, running, accomplished or aborted."""
        counts = dict.fromkeys(("invalid", "running", "accomplished", "aborted"), 0)
        for key in self._workflow_keys():
            status = (self._effective(key) or {}).get("status") or {}
            conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            phase = (
                "invalid"
                if conds.get("Scheduled") == "False"
                else "aborted"
                if conds.get("Aborted") == "True"
                else "accomplished"
                if conds.get("Accomplished") == "True"
                else "running"
            )
            counts[phase] += 1
        return counts

    def next_wakeup(self) -> float | None:
        times = [t for t in self.wakeups.values()]
        times += [t for k, s in self.checks.items() if k not in self.probing and (t := sc.next_wakeup(s)) is not None]
        return min(times) if times else None

    # --- StatusChecks ---------------------------------------------------------------------------

    def _track_check(self, key: Key, obj: Obj) -> list[str]:
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            self.checks.pop(key, None)
            return []
        if key in self.checks:
            return []
        created = (obj.get("metadata") or {}).get("creationTimestamp")
        try:
            spec = sc.decode_spec(obj.get("spec"))
            sc.validate(spec)
        except sc.InvalidCheck as e:
            return [f"StatusCheck/{key[1]}/{key[2]}: {e}"]
        self.checks[key] = sc.from_status(spec, parse_rfc3339(created) if created else 0.0, obj.get("status"))
        return []

    def _check_status(self, key: Key, state: sc.CheckState, *, completing: bool) -> list[wf.Write]:
        """The check's status, and when this change completes it, Chaos Mesh's Events about that."""
        body = sc.status_of(state)
        self.patched[key] = merge_patch(self.patched.get(key, {}), body)
        uid = ((self.seen.get(key) or {}).get("metadata") or {}).get("uid", "")
        out = [wf.Write("status", key[0], key[1], key[2], uid=uid, body=body)]
        for type_, reason, message in sc.completion_events(state) if completing else []:
            out.append(
                wf.Write(
                    "event", key[0], key[1], key[2], uid=uid, reason=reason, body={"type": type_, "message": message}
                )
            )
        return out

    # --- Workflows ------------------------------------------------------------------------------

    def _reconcile_for(self, key: Key, now: float) -> Outputs:
        """Reconcile the workflow an object belongs to (itself, or by its workflow label)."""
        if key[0] == "Workflow":
            return self._reconcile(key, now)
        obj = self._effective(key)
        name = ((obj or {}).get("metadata") or {}).get("labels", {}).get(wf.LABEL_WORKFLOW)
        return self._reconcile(("Workflow", key[1], name), now) if name else Outputs()

    def _reconcile(self, key: Key, now: float) -> Outputs:
        workflow = self._effective(key)
        if workflow is None or (workflow.get("metadata") or {}).get("deletionTimestamp"):
            self.wakeups.pop(key, None)
            return Outputs()
        step = wf.reconcile(self._view(key, workflow), now)
        for w in step.writes:
            self._remember(w)
        if step.wakeup is None:
            self.wakeups.pop(key, None)
        else:
            self.wakeups[key] = step.wakeup
        tasks = [t for t in step.tasks if ("WorkflowNode", t.namespace, t.node) not in self.tasks_sent]
        self.tasks_sent.update(("WorkflowNode", t.namespace, t.node) for t in tasks)
        return Outputs(writes=step.writes, tasks=tasks)

    def _teardown(self, key: Key) -> list[wf.Write]:
        writes = wf.teardown(self._view(key, {}))
        for w in writes:
            self._remember(w)
        self.wakeups.pop(key, None)
        return writes

    def _index(self, key: Key, obj: Obj) -> None:
        """Remember which workflow an object belongs to (its label), so a view costs its size."""
        name = _labels(obj).get(wf.LABEL_WORKFLOW)
        if key[0] == "Workflow":
            self.workflows.add(key)
        elif name:
            self.members.setdefault((key[1], name), set()).add(key)

    def _view(self, key: Key, workflow: Obj) -> wf.View:
        view = wf.View(workflow=workflow)
        for k in sorted(self.members.get((key[1], key[2]), ())):
            obj = self._effective(k)
            if obj is None or _labels(obj).get(wf.LABEL_WORKFLOW) != key[2]:
                continue
            (view.nodes if k[0] == "WorkflowNode" else view.children)[k[2]] = obj
        return view

    def _effective(self, key: Key) -> Obj | None:
        base = self.seen.get(key) or self.created.get(key)
        if base is None:
            return None
        obj = dict(base)
        if key in self.patched:
            obj["status"] = merge_patch(obj.get("status") or {}, self.patched[key])
        if key in self.annotated or key in self.deleted:
            meta = dict(obj.get("metadata") or {})
            ann = {**(meta.get("annotations") or {}), **self.annotated.get(key, {})}
            meta["annotations"] = {k: v for k, v in ann.items() if v is not None}
            if key in self.deleted:
                meta.setdefault("deletionTimestamp", "pending")
            obj["metadata"] = meta
        return obj

    def _remember(self, w: wf.Write) -> None:
        key = (w.kind, w.namespace, w.name)
        if w.op == "create" and key not in self.seen:
            self.created[key] = w.body
            self._index(key, w.body)
        elif w.op == "status":
            self.patched[key] = merge_patch(self.patched.get(key, {}), w.body)
        elif w.op == "annotate":
            self.annotated[key] = {**self.annotated.get(key, {}), **w.annotations}
        elif w.op == "delete":
            self.deleted.add(key)
            self.checks.pop(key, None)

    def _forget(self, key: Key) -> None:
        for table in (self.seen, self.created, self.patched, self.annotated, self.checks, self.wakeups):
            table.pop(key, None)
        self.deleted.discard(key)
        self.tasks_sent.discard(key)
        self.workflows.discard(key)
        for group in [g for g, members in self.members.items() if key in members]:
            self.members[group].discard(key)
            if not self.members[group]:
                del self.members[group]

    def _workflow_keys(self) -> list[Key]:
        return sorted(self.workflows)


def _labels(obj: Obj) -> dict[str, str]:
    labels: dict[str, str] = (obj.get("metadata") or {}).get("labels") or {}
    return labels
