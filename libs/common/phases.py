"""How an experiment's state reads at a glance: its phase and how many targets are injected, as
`chaosbus get` and the dashboard show them. Pure.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def chaos_phase(obj: Obj) -> str:
    """The recorder's `status.phase` (see services/recorder/status.py); for a status written before
    it existed, Chaos Mesh's derived UI phase: Deleting, Paused, Finished, Running, Injecting, Failed.
    """
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or []}
    records = (status.get("experiment") or {}).get("containerRecords")
    if meta.get("deletionTimestamp"):
        return "Deleting"
    if isinstance(status.get("phase"), str) and status["phase"]:
        return str(status["phase"])
    if conds.get("Paused", {}).get("status") == "True":
        return "Paused"
    if records is None and conds.get("Selected", {}).get("message"):
        return "Failed"
    desired = (status.get("experiment") or {}).get("desiredPhase")
    if records and desired == "Stop" and conds.get("AllRecovered", {}).get("status") == "True":
        return "Finished"
    if records and conds.get("AllInjected", {}).get("status") == "True":
        return "Running"
    if records and any(_failed(r) for r in records):
        return "Failed"
    return "Injecting"


def _failed(record: Obj) -> bool:
    events = record.get("events") or []
    return bool(events) and events[-1].get("type") == "Failed"


def records(obj: Obj) -> list[Obj]:
    return list(((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or [])


def injected_total(obj: Obj) -> tuple[int, int]:
    """Targets whose fault is in force, of all selected targets."""
    recs = records(obj)
    return sum(1 for r in recs if r.get("phase") == "Injected"), len(recs)
