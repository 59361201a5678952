"""Page models: what each page shows, computed from the objects the dashboard holds. Pure.

An object's key is `Kind/namespace/name`; experiments are the chaos kinds (executed or accepted),
Schedules, Workflows and StatusChecks are shown on their own pages.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from chaosbus.common import messages as m
from chaosbus.common.crd import ALL_KINDS, CHAOS_KINDS, NOT_EXECUTED
from chaosbus.common.crd.meta import PAUSE_ANNOTATION
from chaosbus.common.objects import parse_rfc3339
from chaosbus.common.phases import chaos_phase, injected_total

Obj = dict[str, Any]
SILENT_AFTER_INTERVALS = 3  # a node not heard from for this many report intervals is shown silent


def key_of(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', '')}/{meta.get('namespace', '')}/{meta.get('name', '')}"


def is_experiment(kind: str) -> bool:
    kinds = ALL_KINDS.get(kind)
    return kind in CHAOS_KINDS or (kind in NOT_EXECUTED and kinds is not None and kinds.experiment)


def paused(obj: Obj) -> bool:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(PAUSE_ANNOTATION) == "true"


def age(created: str, now: float) -> str:
    try:
        secs = int(now - parse_rfc3339(created)) if created else -1
    except ValueError:
        secs = -1
    if secs < 0:
        return "-"
    for unit, size, limit in (("s", 1, 120), ("m", 60, 7200), ("h", 3600, 172800)):
        if secs < limit:
            return f"{secs // size}{unit}"
    return f"{secs // 86400}d"


@dataclass(frozen=True)
class ExperimentRow:
    key: str
    kind: str
    namespace: str
    name: str
    action: str
    phase: str
    injected: int
    total: int
    age: str
    paused: bool

    def live(self) -> dict[str, Any]:
        """What the list page updates in place when it changes."""
        return {
            "key": self.key,
            "phase": self.phase,
            "injected": self.injected,
            "total": self.total,
            "paused": self.paused,
        }


def experiment_row(obj: Obj, now: float) -> ExperimentRow:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    injected, total = injected_total(obj)
    return ExperimentRow(
        key=key_of(obj),
        kind=str(obj.get("kind", "")),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        action=str(spec.get("action") or "-"),
        phase=chaos_phase(obj),
        injected=injected,
        total=total,
        age=age(str(meta.get("creationTimestamp", "")), now),
        paused=paused(obj),
    )


def experiment_rows(objs: list[Obj], now: float) -> list[ExperimentRow]:
    rows = [experiment_row(o, now) for o in objs if is_experiment(str(o.get("kind", "")))]
    return sorted(rows, key=lambda r: (r.namespace, r.kind, r.name))


def spec_yaml(obj: Obj) -> str:
    """The object as the user would write it again: without status and server-set metadata."""
    meta = obj.get("metadata") or {}
    kept = {k: v for k, v in meta.items() if k in ("name", "namespace", "labels", "annotations")}
    doc = {
        "apiVersion": obj.get("apiVersion", ""),
        "kind": obj.get("kind", ""),
        "metadata": kept,
        "spec": obj.get("spec") or {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def conditions(obj: Obj) -> list[Obj]:
    return [c for c in (obj.get("status") or {}).get("conditions") or [] if isinstance(c, dict)]


def events_of(obj: Obj, events: list[Obj]) -> list[Obj]:
    uid = (obj.get("metadata") or {}).get("uid")
    mine = [e for e in events if (e.get("involvedObject") or {}).get("uid") == uid]
    return sorted(mine, key=lambda e: str(e.get("lastTimestamp", "")))


def recent_events(events: list[Obj], limit: int = 300) -> list[Obj]:
    return sorted(events, key=lambda e: str(e.get("lastTimestamp", "")), reverse=True)[:limit]


@dataclass(frozen=True)
class ScheduleView:
    obj: Obj
    kind: str  # of what it spawns
    paused: bool
    children: list[Obj]


def schedule_views(objs: list[Obj]) -> list[ScheduleView]:
    """Each Schedule with the objects it spawned (owner reference to it), newest first."""
    out = []
    for s in objs:
        if s.get("kind") != "Schedule":
            continue
        uid = (s.get("metadata") or {}).get("uid")
        kids = [
            o
            for o in objs
            if any(
                r.get("uid") == uid
                for r in (o.get("metadata") or {}).get("ownerReferences") or []
                if isinstance(r, dict)
            )
        ]
        kids.sort(key=lambda o: str((o.get("metadata") or {}).get("creationTimestamp", "")), reverse=True)
        out.append(ScheduleView(s, str((s.get("spec") or {}).get("type", "")), paused(s), kids))
    return sorted(out, key=lambda v: key_of(v.obj))


def workflow_nodes(workflow: Obj, objs: list[Obj]) -> list[Obj]:
    meta = workflow.get("metadata") or {}
    return [
        o
        for o in objs
        if o.get("kind") == "WorkflowNode"
        and (o.get("metadata") or {}).get("namespace") == meta.get("namespace")
        and ((o.get("metadata") or {}).get("labels") or {}).get("chaos-mesh.org/workflow") == meta.get("name")
    ]


def workflow_state(workflow: Obj) -> str:
    conds = {c.get("type"): c.get("status") for c in conditions(workflow)}
    if conds.get("Aborted") == "True":
        return "Aborted"
    if conds.get("Accomplished") == "True":
        return "Accomplished"
    if conds.get("Scheduled") == "True":
        return "Running"
    if any(c.get("reason") == "InvalidSpec" for c in conditions(workflow)):
        return "Invalid"
    return "Pending"


@dataclass(frozen=True)
class NodeView:
    name: str
    state: str  # healthy | silent | halted
    last_seen: float
    lease_age_s: float
    lease_ttl_s: float
    open_entries: int
    experiments: list[m.JournalSummary] = field(default_factory=list)


def node_views(health: dict[str, m.NodeHealth], known: list[str], now: float) -> list[NodeView]:
    """Every node that reported or that the store knows (a known node never heard from is silent)."""
    out = []
    for name in sorted(set(health) | set(known)):
        h = health.get(name)
        if h is None:
            out.append(NodeView(name, "silent", 0.0, -1.0, 0.0, 0))
            continue
        silent = now - h.at > SILENT_AFTER_INTERVALS * max(h.interval_s, 0.5)
        state = "silent" if silent else "halted" if h.halted else "healthy"
        out.append(NodeView(name, state, h.at, h.lease_age_s, h.lease_ttl_s, h.open_entries, list(h.experiments)))
    return out


# --- validation errors at their field ----------------------------------------------------------------

_FIELD = re.compile(r"^(?:document \d+ \([^)]*\): )?([A-Za-z0-9_.\[\]/-]+): (.*)$", re.S)
_INDEX = re.compile(r"^([^\[]*)((?:\[\d+\])*)$")


def field_of(error: str) -> tuple[str, str]:
    """`spec.direction: expected ...` -> (`spec.direction`, `expected ...`); no field: ("", error)."""
    found = _FIELD.match(error)
    return (found.group(1), found.group(2)) if found else ("", error)


def _steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    for token in path.split("."):
        parts = _INDEX.match(token)
        if parts is None:
            steps.append(token)
            continue
        if parts.group(1):
            steps.append(parts.group(1))
        steps += [int(i) for i in re.findall(r"\[(\d+)\]", parts.group(2))]
    return steps


def line_of(text: str, path: str, document: int = 0) -> int | None:
    """The 1-based line where `path` (or its nearest existing parent) is written in the YAML text."""
    try:
        docs = list(yaml.compose_all(text))
    except yaml.YAMLError:
        return None
    if document >= len(docs) or docs[document] is None:
        return None
    node: yaml.Node = docs[document]
    line: int = node.start_mark.line + 1
    for step in _steps(path):
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == step:
                    line, nxt = k.start_mark.line + 1, v
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            nxt = node.value[step]
            line = nxt.start_mark.line + 1
        if nxt is None:
            break
        node = nxt
    return line


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    line: int | None


def located(text: str, errors: list[str]) -> list[FieldError]:
    """Each admission error with its field and the line of the YAML it is about."""
    out = []
    for err in errors:
        doc = re.match(r"^document (\d+) ", err)
        path, message = field_of(err)
        out.append(
            FieldError(path, message, line_of(text, path, int(doc.group(1)) - 1 if doc else 0) if path else None)
        )
    return out


def now() -> float:
    return time.time()
