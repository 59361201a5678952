"""The Workflow state machine, pure and driven by an injected clock.

Input: a Workflow object, the WorkflowNode objects of that workflow and the objects its nodes
created (chaos, StatusCheck, Schedule), as last seen, and `now`. Output: the object writes that
move it on (create, delete, status, annotate; the recorder carries them out) and when to look
again. Every bit of progress lives in those objects, named deterministically (wfspec), so a
restarted scheduler that replays them continues where its predecessor stopped and creates
nothing twice.

Semantics follow Chaos Mesh: a node per activated template, Serial one child at a time, Parallel
all at once, Suspend until its deadline, a chaos step creates its chaos object and ends at its
deadline (the object is then deleted, which recovers the fault) or, for one-shot faults, once every
target is Injected. A node's deadline never exceeds its parent's. A StatusCheck step with
`abortWithStatusCheck` that fails annotates the workflow with abort, and every running node then
ends Aborted and every fault it started is deleted.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import msgspec

from chaosbus.common.crd.objects import API_VERSION
from chaosbus.common.crd.orchestration import Template
from chaosbus.common.objects import parse_rfc3339, rfc3339
from chaosbus.scheduler import statuscheck as sc
from chaosbus.scheduler import wfspec as ws
from chaosbus.scheduler.wfnodes import (
    ABORT_ANNOTATION,
    ABORTED,
    ACCOMPLISHED,
    CHAOS_INJECTED,
    DEADLINE_EXCEED,
    DEFAULT_TASK_TIMEOUT_S,
    LABEL_CONTROLLED_BY,
    LABEL_WORKFLOW,
    Obj,
    TaskRun,
    Write,
    chaos_done,
    cond,
    conditions_with,
    deadline_of,
    delete_write,
    deleting,
    evaluate_branches,
    finish_event,
    finished_by,
)

__all__ = ["LABEL_CONTROLLED_BY", "LABEL_WORKFLOW", "TaskRun", "View", "Write", "finished_by", "reconcile", "teardown"]


@dataclass
class View:
    workflow: Obj
    nodes: dict[str, Obj] = field(default_factory=dict)  # WorkflowNodes by name
    children: dict[str, Obj] = field(default_factory=dict)  # objects created by nodes, by name


@dataclass
class Step:
    writes: list[Write] = field(default_factory=list)
    wakeup: float | None = None
    accomplished: bool = False
    tasks: list[TaskRun] = field(default_factory=list)


def reconcile(view: View, now: float) -> Step:
    run = _Run(view, now)
    run.pass_()
    if run.abort_started:  # one more pass so every running node sees the abort at once
        run.abort_started = False
        run.pass_()
    return Step(
        writes=run.writes,
        wakeup=min(run.wakeups) if run.wakeups else None,
        accomplished=run.accomplished,
        tasks=run.tasks,
    )


def teardown(view: View) -> list[Write]:
    """A deleted workflow: delete every node and every object a node created (faults recover)."""
    out = [delete_write(obj) for obj in view.children.values() if not deleting(obj)]
    return out + [delete_write(obj) for obj in view.nodes.values() if not deleting(obj)]


class _Run:
    def __init__(self, view: View, now: float) -> None:
        self.wf = copy.deepcopy(view.workflow)
        self.nodes = copy.deepcopy(view.nodes)
        self.children = dict(view.children)
        self.now = now
        self.writes: list[Write] = []
        self.wakeups: list[float] = []
        self.tasks: list[TaskRun] = []
        self.accomplished = False
        self.abort_started = False
        meta = self.wf.get("metadata") or {}
        self.ns, self.name, self.uid = meta.get("namespace") or "default", meta.get("name", ""), meta.get("uid", "")
        self.aborted = (meta.get("annotations") or {}).get(ABORT_ANNOTATION) == "true"
        self.templates: dict[str, Template] = {}

    # --- the workflow ---------------------------------------------------------------------------

    def pass_(self) -> None:
        self.wakeups.clear()
        self.tasks.clear()
        status = self.wf.get("status") or {}
        try:
            spec = ws.decode(self.wf.get("spec"))
            self.templates = ws.validate(spec, self.ns)
        except ws.InvalidWorkflow as e:
            self._workflow_status(
                {"conditions": [cond("Scheduled", False, "InvalidSpec", str(e)), cond(ACCOMPLISHED, False)]}
            )
            return
        entry = status.get("entryNode") or ws.node_name(self.uid, self.name, spec.entry, 0)
        start = status.get("startTime") or rfc3339(self.now)
        if entry not in self.nodes:
            self._create_node(entry, spec.entry, parent=None, parent_deadline=None)
            self._event(self.wf, "Normal", "EntryCreated", f"entry node created, entry node {entry}")
        outcome = self._visit(entry) if entry in self.nodes else ""
        self.accomplished = bool(outcome)
        if outcome and not status.get("endTime"):
            self._event(self.wf, "Normal", "WorkflowAccomplished", "workflow accomplished")
        conds = [cond("Scheduled", True), cond(ACCOMPLISHED, bool(outcome))]
        if self.aborted:
            conds.append(cond(ABORTED, True, "WorkflowAborted"))
        new: Obj = {"entryNode": entry, "startTime": start, "conditions": conds}
        if outcome:
            new["endTime"] = status.get("endTime") or rfc3339(self.now)
        self._workflow_status(new)

    def _workflow_status(self, new: Obj) -> None:
        old = self.wf.get("status") or {}
        if {**old, **new} != old:
            self.wf["status"] = {**old, **new}
            self.writes.append(Write("status", "Workflow", self.ns, self.name, uid=self.uid, body=new))

    # --- nodes ----------------------------------------------------------------------------------

    def _visit(self, name: str) -> str:
        node = self.nodes[name]
        spec, status = node.get("spec") or {}, node.get("status") or {}
        t = self.templates.get(spec.get("templateName", ""))
        done = finished_by(status)
        if t is None:  # the workflow was edited and this template is gone: nothing more to do here
            return done or self._finish(node, ACCOMPLISHED, "TemplateRemoved")
        stop = bool(done) or self.aborted or self._expired(node)
        if t.template_type in (ws.SERIAL, ws.PARALLEL):
            self._composite(node, list(t.children), serial=t.template_type == ws.SERIAL, stop=stop)
        elif t.template_type == ws.TASK:
            self._task(node, t, stop=stop)
        if done:
            self._cleanup(node, t)
            return done
        if self.aborted:
            return self._finish(node, ABORTED, "WorkflowAborted", t)
        if self._expired(node):
            return self._finish(node, DEADLINE_EXCEED, self._deadline_reason(node, t), t)
        deadline = deadline_of(node)
        if deadline is not None:
            self.wakeups.append(deadline)
        if not status.get("conditions"):
            self._set_status(node, {"conditions": conditions_with(status, {})})
        if t.template_type in (ws.SERIAL, ws.PARALLEL):
            return self._composite_done(node, len(t.children), "")  # Chaos Mesh gives no reason here
        if t.template_type == ws.TASK:
            return self._task_done(node)
        return self._leaf(node, t)

    def _composite(self, node: Obj, children: list[tuple[int, str]] | list[str], *, serial: bool, stop: bool) -> None:
        """Visit (and, unless stopping, start) the children; record which run and which finished."""
        name = node["metadata"]["name"]
        active, finished, created = [], [], []
        for i, entry in enumerate(children):
            index, child_template = entry if isinstance(entry, tuple) else (i, entry)
            child = ws.node_name(self.uid, name, child_template, index)
            if child not in self.nodes:
                if stop or not node["metadata"].get("uid"):
                    break  # a child's owner reference needs its parent's uid: wait for it
                self._create_node(child, child_template, parent=node, parent_deadline=deadline_of(node))
                created.append(child)
            if self._visit(child):
                finished.append({"name": child})
            else:
                active.append({"name": child})
                if serial:
                    break
        self._set_status(node, {"activeChildren": active, "finishedChildren": finished})
        if created:
            self._event(node, "Normal", "NodesCreated", f"child nodes created, {','.join(created)}")

    def _composite_done(self, node: Obj, expected: int, reason: str) -> str:
        status = node.get("status") or {}
        if len(status.get("finishedChildren") or []) == expected:
            return self._finish(node, ACCOMPLISHED, reason)
        return ""

    def _task(self, node: Obj, t: Template, *, stop: bool) -> None:
        """Ask for the command until its result is in; then evaluate the branches once and run the
        templates of the true ones, in parallel.
        """
        md = node["metadata"]
        cbs = (node.get("status") or {}).get("conditionalBranchesStatus") or {}
        if not cbs.get("context"):
            if not stop and md.get("uid"):
                deadline = deadline_of(node)
                timeout = DEFAULT_TASK_TIMEOUT_S if deadline is None else max(1.0, deadline - self.now)
                self.tasks.append(
                    TaskRun(
                        md["name"],
                        self.ns,
                        md["uid"],
                        tuple(ws.task_argv(t)),
                        timeout,
                        container=dict((t.task.container if t.task else None) or {}),
                        volumes=list(t.task.volumes if t.task else []),
                        workflow=self.name,
                    )
                )
            return
        branches = cbs.get("branches")
        if branches is None:
            branches = evaluate_branches(t, cbs["context"][0])
            self._set_status(node, {"conditionalBranchesStatus": {**cbs, "branches": branches}})
        chosen = [(i, b["target"]) for i, b in enumerate(branches) if b.get("evaluationResult") == "True"]
        self._composite(node, chosen, serial=False, stop=stop)

    def _task_done(self, node: Obj) -> str:
        cbs = (node.get("status") or {}).get("conditionalBranchesStatus") or {}
        if cbs.get("branches") is None:
            return ""
        chosen = [b for b in cbs["branches"] if b.get("evaluationResult") == "True"]
        return self._composite_done(node, len(chosen), "NodeAccomplished")

    def _leaf(self, node: Obj, t: Template) -> str:
        if t.template_type == ws.SUSPEND:
            return ""
        name = node["metadata"]["name"]
        child = self.children.get(ws.child_name(name))
        status = node.get("status") or {}
        if not status.get("chaosResource"):
            if not node["metadata"].get("uid"):
                return ""  # the child's owner reference needs the node's uid: wait for it
            created = self._child_object(node, t)
            self._emit(
                Write("create", created["kind"], self.ns, created["metadata"]["name"], body=created, reason="Spawned")
            )
            self.children[created["metadata"]["name"]] = created
            ref = {"apiGroup": "chaos-mesh.org", "kind": created["kind"], "name": created["metadata"]["name"]}
            injected = t.template_type in ws.CHAOS_KEYS
            self._set_status(
                node,
                {
                    "chaosResource": ref,
                    "conditions": conditions_with(
                        status, {CHAOS_INJECTED: (True, "ChaosCRCreated")} if injected else {}
                    ),
                },
            )
            return ""
        if child is None:
            return self._finish(node, ACCOMPLISHED, "ChaosCRNotExists", t)
        if t.template_type == ws.STATUS_CHECK:
            return self._status_check_step(node, t, child)
        if t.template_type in ws.CHAOS_KEYS and chaos_done(child, ws.is_one_shot(t)):
            return self._finish(node, ACCOMPLISHED, "NodeAccomplished", t)
        return ""

    def _status_check_step(self, node: Obj, t: Template, child: Obj) -> str:
        assert t.status_check is not None
        passed = sc.succeeded(child.get("status"))
        if passed is None:
            return ""
        if passed or not t.abort_with_status_check:
            return self._finish(node, ACCOMPLISHED, "StatusCheckCompleted", t)
        if not self.aborted:
            self.aborted = self.abort_started = True
            self._emit(
                Write(
                    "annotate",
                    "Workflow",
                    self.ns,
                    self.name,
                    uid=self.uid,
                    annotations={ABORT_ANNOTATION: "true"},
                    reason="StatusCheckFailed",
                )
            )
        # As Chaos Mesh: the step is Accomplished (its check completed) and Aborted (it did not pass).
        self._set_status(
            node,
            {
                "conditions": conditions_with(
                    node.get("status") or {},
                    {
                        ACCOMPLISHED: (True, "StatusCheckCompleted"),
                        ABORTED: (True, "StatusCheckNotExceedSuccessThreshold"),
                    },
                )
            },
        )
        self._cleanup(node, t)
        return ABORTED

    def _finish(self, node: Obj, ctype: str, reason: str, t: Template | None = None) -> str:
        self._set_status(node, {"conditions": conditions_with(node.get("status") or {}, {ctype: (True, reason)})})
        parent = str(((node.get("metadata") or {}).get("labels") or {}).get(LABEL_CONTROLLED_BY, ""))
        event = finish_event(ctype, reason, parent, self.name)
        if event is not None:
            self._event(node, *event)
        if t is not None:
            self._cleanup(node, t)
        return ctype

    def _cleanup(self, node: Obj, t: Template) -> None:
        """A finished node's running child goes: a chaos object (so its faults are recovered), a
        Schedule, an unfinished StatusCheck. A completed StatusCheck stays, as the record of it.
        """
        child = self.children.get(ws.child_name(node["metadata"]["name"]))
        if child is None or deleting(child):
            return
        if t.template_type == ws.STATUS_CHECK and sc.succeeded(child.get("status")) is not None:
            return
        self._emit(delete_write(child))
        self.children[child["metadata"]["name"]] = {
            **child,
            "metadata": {**child["metadata"], "deletionTimestamp": rfc3339(self.now)},
        }

    # --- helpers --------------------------------------------------------------------------------

    def _create_node(self, name: str, template: str, *, parent: Obj | None, parent_deadline: float | None) -> None:
        t = self.templates[template]
        own = ws.deadline_s(t)
        # Whole seconds up (timestamps have no fraction), capped by the parent's: a child never outlives it.
        ends = [d for d in (None if own is None else math.ceil(self.now + own), parent_deadline) if d is not None]
        owner = parent or self.wf
        spec: Obj = {
            "templateName": template,
            "workflowName": self.name,
            "type": t.template_type,
            "startTime": rfc3339(self.now),
        }
        if ends:
            spec["deadline"] = rfc3339(min(ends))
        spec.update({k: v for k, v in msgspec.to_builtins(t).items() if k not in ("name", "templateType", "deadline")})
        obj = self._owned("WorkflowNode", name, owner, spec)
        self.nodes[name] = obj
        self._emit(Write("create", "WorkflowNode", self.ns, name, body=obj, reason="NodeCreated"))

    def _child_object(self, node: Obj, t: Template) -> Obj:
        name = ws.child_name(node["metadata"]["name"])
        if t.template_type == ws.STATUS_CHECK:
            return self._owned("StatusCheck", name, node, msgspec.to_builtins(t.status_check))
        if t.template_type == ws.SCHEDULE:
            return self._owned("Schedule", name, node, msgspec.to_builtins(t.schedule))
        return self._owned(t.template_type, name, node, copy.deepcopy(ws.embedded(t) or {}))

    def _owned(self, kind: str, name: str, owner: Obj, spec: Obj) -> Obj:
        om = owner.get("metadata") or {}
        ref = {
            "apiVersion": API_VERSION,
            "kind": owner.get("kind", "Workflow"),
            "name": om.get("name"),
            "uid": om.get("uid", ""),
            "controller": True,
            "blockOwnerDeletion": True,
        }
        meta = {
            "name": name,
            "namespace": self.ns,
            "ownerReferences": [ref],
            "labels": {LABEL_WORKFLOW: self.name, LABEL_CONTROLLED_BY: str(om.get("name"))},
        }
        return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}

    def _set_status(self, node: Obj, change: Obj) -> None:
        old = node.get("status") or {}
        new = {**old, **change}
        if new != old:
            node["status"] = new
            md = node["metadata"]
            self._emit(Write("status", "WorkflowNode", self.ns, md["name"], uid=md.get("uid", ""), body=change))

    def _emit(self, write: Write) -> None:
        self.writes.append(write)

    def _event(self, about: Obj, type_: str, reason: str, message: str) -> None:
        """An Event Chaos Mesh would record on the workflow or one of its nodes."""
        md = about.get("metadata") or {}
        self._emit(
            Write(
                "event",
                str(about.get("kind", "Workflow")),
                self.ns,
                str(md.get("name")),
                uid=str(md.get("uid", "")),
                reason=reason,
                body={"type": type_, "message": message},
            )
        )

    def _expired(self, node: Obj) -> bool:
        deadline = deadline_of(node)
        return deadline is not None and self.now >= deadline

    def _deadline_reason(self, node: Obj, t: Template) -> str:
        own = ws.deadline_s(t)
        start = parse_rfc3339(node["spec"]["startTime"])
        deadline = deadline_of(node)
        cut_by_parent = own is None or (deadline is not None and math.ceil(start + own) > deadline + 1)
        return "ParentNodeDeadlineExceed" if cut_by_parent else "NodeDeadlineExceed"
