"""WorkflowNode vocabulary shared by the workflow state machine and the orchestrator: labels,
condition types, the write and task records the machine emits, and the small pure rules about
node status (conditions, when a chaos child is finished, branch evaluation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chaosbus.common.crd.orchestration import Template
from chaosbus.common.objects import parse_rfc3339
from chaosbus.scheduler import branchexpr

Obj = dict[str, Any]
LABEL_WORKFLOW = "chaos-mesh.org/workflow"
LABEL_CONTROLLED_BY = "chaos-mesh.org/controlled-by"
ABORT_ANNOTATION = "workflow.chaos-mesh.org/abort"
ACCOMPLISHED, DEADLINE_EXCEED, ABORTED, CHAOS_INJECTED = "Accomplished", "DeadlineExceed", "Aborted", "ChaosInjected"
FINISHED = (ACCOMPLISHED, DEADLINE_EXCEED, ABORTED)
NODE_CONDITIONS = (ACCOMPLISHED, DEADLINE_EXCEED, ABORTED, CHAOS_INJECTED)
DEFAULT_TASK_TIMEOUT_S = 600.0


@dataclass
class Write:
    """One object change; the scheduler's edge turns it into an ObjectWrite message."""

    op: str  # create | delete | status | annotate | event
    kind: str
    namespace: str
    name: str
    uid: str = ""
    body: Any = None  # create: the object; status: a JSON merge patch of .status; event: {type, message}
    annotations: dict[str, str | None] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class TaskRun:
    """A Task step's command to run on a node; its result comes back through the orchestrator,
    which writes it into the node's `conditionalBranchesStatus.context`.
    """

    node: str
    namespace: str
    uid: str
    argv: tuple[str, ...]
    timeout_s: float
    # What a Pod needs in cluster mode (the template's task.container and task.volumes, as given).
    container: Obj = field(default_factory=dict, compare=False)
    volumes: list[Obj] = field(default_factory=list, compare=False)
    workflow: str = ""


def finished_by(status: Obj | None) -> str:
    """The condition that finished a node ("" while it runs)."""
    conds = {c.get("type"): c.get("status") for c in (status or {}).get("conditions") or []}
    return next((t for t in FINISHED if conds.get(t) == "True"), "")


def evaluate_branches(t: Template, context: str) -> list[Obj]:
    """Each branch's value for the task's result (`Unknown`, with the reason, when it cannot be
    evaluated: a malformed expression, or a task that produced no exit code).
    """
    try:
        result = json.loads(context)
        exit_code, stdout = int(result["exitCode"]), str(result.get("stdout", ""))
    except (ValueError, KeyError, TypeError):
        exit_code, stdout = None, ""
    out = []
    for b in t.conditional_branches:
        entry: Obj = {"target": b.target}
        try:
            if exit_code is None:
                raise branchexpr.ExpressionError("the task produced no result")
            value = branchexpr.evaluate(b.expression, exit_code=exit_code, stdout=stdout)
            entry["evaluationResult"] = "True" if value else "False"
        except branchexpr.ExpressionError as e:
            entry.update(evaluationResult="Unknown", message=str(e))
        out.append(entry)
    return out


def deadline_of(node: Obj) -> float | None:
    text = (node.get("spec") or {}).get("deadline")
    return parse_rfc3339(text) if text else None


def cond(ctype: str, true: bool, reason: str = "", message: str = "") -> Obj:
    """A condition as Chaos Mesh writes it: `reason` always present ("" when there is none)."""
    out: Obj = {"type": ctype, "status": "True" if true else "False", "reason": reason}
    if message:
        out["message"] = message
    return out


def conditions_with(status: Obj, set_: dict[str, tuple[bool, str]]) -> list[Obj]:
    """The node's conditions with `set_` applied; Accomplished and DeadlineExceed always present."""
    have = {c["type"]: c for c in status.get("conditions") or []}
    for ctype, (true, reason) in set_.items():
        have[ctype] = cond(ctype, true, reason)
    for ctype in (ACCOMPLISHED, DEADLINE_EXCEED):
        have.setdefault(ctype, cond(ctype, False))
    return [have[t] for t in NODE_CONDITIONS if t in have]


def chaos_done(child: Obj, one_shot: bool) -> bool:
    """Chaos Mesh's "finished": one-shot when every record is Injected; otherwise when stopped (its
    own duration) and every record is Not Injected.
    """
    exp = (child.get("status") or {}).get("experiment") or {}
    phases = {r.get("phase") for r in exp.get("containerRecords") or []}
    if not phases:
        return False
    if one_shot:
        return phases == {"Injected"}
    return exp.get("desiredPhase") == "Stop" and phases == {"Not Injected"}


def finish_event(ctype: str, reason: str, parent: str, workflow: str) -> tuple[str, str, str] | None:
    """The Event (type, reason, message) Chaos Mesh records on a node that finishes this way."""
    if ctype == ACCOMPLISHED and reason != "StatusCheckCompleted":
        return "Normal", "NodeAccomplished", "node accomplished"
    if reason == "NodeDeadlineExceed":
        return "Normal", "NodeDeadlineExceed", "deadline exceed"
    if reason == "ParentNodeDeadlineExceed":
        return "Normal", reason, f"deadline exceed because parent node {parent} deadline exceed"
    if reason == "WorkflowAborted":
        return "Normal", reason, f"abort the node because workflow {workflow} aborted"
    return None


def deleting(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def delete_write(obj: Obj) -> Write:
    md = obj.get("metadata") or {}
    return Write(
        "delete",
        str(obj.get("kind")),
        md.get("namespace", "default"),
        md.get("name", ""),
        uid=md.get("uid", ""),
        reason="Finished",
    )
