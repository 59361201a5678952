"""How the CLI shows objects: kubectl-like tables, YAML/JSON, and `describe` text."""

from __future__ import annotations

import json
import time
from typing import Any

import yaml

from chaosbus.common import processid
from chaosbus.common.crd import ORCHESTRATED
from chaosbus.common.objects import parse_rfc3339
from chaosbus.common.phases import chaos_phase, injected_total

Obj = dict[str, Any]
__all__ = ["age", "chaos_phase", "chaos_rows", "describe", "pod_rows", "schedule_rows", "table", "to_json", "to_yaml"]


def age(created: str, now: float | None = None) -> str:
    if not created:
        return "<unknown>"
    secs = int((now or time.time()) - parse_rfc3339(created))
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m"
    if secs < 172800:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def to_yaml(objs: list[Obj]) -> str:
    if len(objs) == 1:
        return yaml.safe_dump(objs[0], sort_keys=False)
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": objs}, sort_keys=False)


def to_json(objs: list[Obj]) -> str:
    if len(objs) == 1:
        return json.dumps(objs[0], indent=2)
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}, indent=2)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def chaos_rows(objs: list[Obj]) -> str:
    rows = []
    for o in objs:
        spec, meta = o.get("spec") or {}, o.get("metadata") or {}
        injected, total = injected_total(o)
        rows.append(
            [
                meta.get("name", ""),
                spec.get("action", "-"),
                spec.get("duration") or "-",
                chaos_phase(o),
                f"{injected}/{total}",
                age(meta.get("creationTimestamp", "")),
            ]
        )
    return table(rows, ["NAME", "ACTION", "DURATION", "PHASE", "INJECTED", "AGE"])


def describe(obj: Obj, events: list[Obj] | None = None) -> str:
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    experiment = obj.get("kind") not in ORCHESTRATED  # Schedules, Workflows, ... have no phase or records
    lines = [
        f"Name:         {meta.get('name')}",
        f"Namespace:    {meta.get('namespace', '')}",
        f"Kind:         {obj.get('kind')}",
        f"UID:          {meta.get('uid')}",
        f"Created:      {meta.get('creationTimestamp')}",
    ]
    if experiment:
        lines.append(f"Phase:        {chaos_phase(obj)}")
    for field in ("labels", "annotations"):
        values = meta.get(field) or {}
        lines.append(f"{field.capitalize() + ':':<14}" + (", ".join(f"{k}={v}" for k, v in values.items()) or "<none>"))
    lines.append(f"Finalizers:   {', '.join(meta.get('finalizers') or []) or '<none>'}")
    if meta.get("deletionTimestamp"):
        lines.append(f"Deleting since {meta['deletionTimestamp']}")
    lines.append("Spec:")
    lines += ["  " + ln for ln in yaml.safe_dump(obj.get("spec") or {}, sort_keys=False).splitlines()]
    lines.append("Conditions:")
    for c in status.get("conditions") or []:
        extra = f"  {c.get('reason', '')} {c.get('message', '')}".rstrip()
        lines.append(f"  {c.get('type'):<14}{c.get('status')}{extra}")
    if not experiment:
        rest = {k: v for k, v in status.items() if k != "conditions"}
        lines.append("Status:" + ("" if rest else "       <none>"))
        lines += ["  " + ln for ln in yaml.safe_dump(rest, sort_keys=False).splitlines()] if rest else []
        return "\n".join(lines + _events(events))
    exp = status.get("experiment") or {}
    lines.append(f"Desired phase: {exp.get('desiredPhase', '<none>')}")
    lines.append("Records:")
    for r in exp.get("containerRecords") or []:
        lines.append(
            f"  {r['id']} ({r['selectorKey']}): {r['phase']}  injected={r['injectedCount']} "
            f"recovered={r['recoveredCount']}"
        )
        for e in (r.get("events") or [])[-5:]:
            lines.append(f"    {e['timestamp']}  {e['operation']:<8}{e['type']:<10}{e.get('message', '')}")
    return "\n".join(lines + _events(events))


def _events(events: list[Obj] | None) -> list[str]:
    """The object's Events, oldest first, a repeat shown as `(xN since ...)` as kubectl does."""
    lines = ["Events:" + ("" if events else "       <none>")]
    for e in sorted(events or [], key=lambda e: str(e.get("lastTimestamp", ""))):
        seen = age(str(e.get("lastTimestamp", "")))
        count = f" (x{e['count']} since {age(str(e.get('firstTimestamp', '')))})" if int(e.get("count", 1)) > 1 else ""
        lines.append(f"  {e.get('type', ''):<8}{e.get('reason', ''):<14}{seen + count:<22}{e.get('message', '')}")
    return lines


def pod_rows(pods: list[Obj]) -> str:
    rows = []
    for p in pods:
        meta, status = p.get("metadata") or {}, p.get("status") or {}
        cs = status.get("containerStatuses") or []
        labels = ",".join(f"{k}={v}" for k, v in (meta.get("labels") or {}).items())
        ready = f"{sum(1 for c in cs if c.get('ready'))}/{len(cs)}"
        rows.append(
            [
                meta.get("namespace", ""),
                meta.get("name", ""),
                ready,
                _pod_status(status, cs),
                status.get("podIP", ""),
                str(sum(c.get("restartCount", 0) for c in cs)),
                (meta.get("annotations") or {}).get("chaosbus.io/netns", ""),
                _cgroup_of(meta),
                ",".join(_pid_of(c.get("containerID", "")) for c in cs),
                labels or "<none>",
            ]
        )
    return table(rows, ["NAMESPACE", "NAME", "READY", "STATUS", "IP", "RESTARTS", "NETNS", "CGROUP", "PIDS", "LABELS"])


def _pod_status(status: Obj, containers: list[Obj]) -> str:
    """As kubectl shows it: a waiting container's reason (PodFailure while a pod-failure holds its
    command), else the pod's phase."""
    for c in containers:
        reason = ((c.get("state") or {}).get("waiting") or {}).get("reason")
        if reason:
            return str(reason)
    return str(status.get("phase", ""))


def _cgroup_of(meta: Obj) -> str:
    """The pod cgroup's path inside its hierarchies (the same in each), as /proc/<pid>/cgroup shows it."""
    dirs = str((meta.get("annotations") or {}).get("chaosbus.io/cgroup", ""))
    first = dirs.split(",")[0]
    return "/" + "/".join(first.rstrip("/").split("/")[-2:]) if first else "<none>"


def schedule_rows(schedules: list[Obj]) -> str:
    """Schedules as `kubectl get schedule` would show them, plus when each last fired."""
    rows = []
    for s in schedules:
        meta, spec, status = s.get("metadata") or {}, s.get("spec") or {}, s.get("status") or {}
        paused = (meta.get("annotations") or {}).get("experiment.chaos-mesh.org/pause") == "true"
        invalid = any(c.get("reason") == "InvalidSpec" for c in status.get("conditions") or [])
        state = "Invalid" if invalid else "Paused" if paused else "Active"
        rows.append(
            [
                meta.get("name", ""),
                spec.get("schedule", ""),
                spec.get("type", ""),
                spec.get("concurrencyPolicy") or "Forbid",
                state,
                str(len(status.get("active") or [])),
                age(status["time"]) if status.get("time") else "<none>",
                age(meta.get("creationTimestamp", "")),
            ]
        )
    return table(rows, ["NAME", "SCHEDULE", "TYPE", "POLICY", "STATE", "CHILDREN", "LAST FIRE", "AGE"])


def _pid_of(container_id: str) -> str:
    ident = processid.parse(container_id)
    return str(ident.pid) if ident is not None else container_id
