"""Pure: which Kubernetes Events a status write deserves, with Chaos Mesh's reasons.

Derived from the difference between the stored object before and after a recorder write, so every
path that changes status (decisions, results) reports the same way:

* desiredPhase becomes Run: `Started`; becomes Stop: `Deleted` (object deleting), `Paused` (pause
  annotation) or `TimeUp` (duration over).
* a record's injectedCount / recoveredCount goes up: `Applied` / `Recovered`.
* a new Failed record event: `Failed` (Warning), with the injector's message.
* selection failed (the Selected condition carries reason SelectionFailed): `Failed` (Warning).
* a kind chaosbus accepts but does not execute: `NotSupported` (Warning).
* as Chaos Mesh's controllers do after their writes: `Updated` when desiredPhase or the records
  change, and `FinalizerInited` (plus `Updated`) when the records finalizer is added;
  `FinalizerRemoved` when it is removed (Chaos Mesh reports that with reason `FinalizerInited`).

Many targets changing at once are summarised in one Event per reason, so a 1,000-target experiment
writes a handful of Events, not thousands.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import msgspec

from chaosbus.common.crd.meta import PAUSE_ANNOTATION
from chaosbus.common.crd.status import RUN, STOP, ChaosStatus

Obj = dict[str, Any]
NORMAL, WARNING = "Normal", "Warning"
PER_TARGET_LIMIT = 5  # above this many targets, one summary Event per reason


@dataclass(frozen=True)
class KubeEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


def _status(obj: Obj | None) -> ChaosStatus:
    raw = (obj or {}).get("status")
    if not raw:
        return ChaosStatus()
    try:
        return msgspec.convert(raw, ChaosStatus)
    except msgspec.ValidationError:
        return ChaosStatus()


def phase_event(before: Obj | None, after: Obj) -> KubeEvent | None:
    old, new = _status(before).experiment.desired_phase, _status(after).experiment.desired_phase
    if old == new or not new:
        return None
    if new == RUN:
        return KubeEvent(NORMAL, "Started", "Experiment has started")
    meta = after.get("metadata") or {}
    if new == STOP and meta.get("deletionTimestamp"):
        return KubeEvent(NORMAL, "Deleted", "Experiment has been deleted")
    if new == STOP and (meta.get("annotations") or {}).get(PAUSE_ANNOTATION) == "true":
        return KubeEvent(NORMAL, "Paused", "Experiment has been paused")
    return KubeEvent(NORMAL, "TimeUp", "Time up according to the duration")


def target_events(before: Obj | None, after: Obj) -> list[KubeEvent]:
    old = {(r.id, r.selector_key): r for r in _status(before).experiment.container_records or []}
    by_reason: dict[str, list[str]] = defaultdict(list)
    failures: list[tuple[str, str, str]] = []
    for rec in _status(after).experiment.container_records or []:
        prev = old.get((rec.id, rec.selector_key))
        if rec.injected_count > (prev.injected_count if prev else 0):
            by_reason["Applied"].append(rec.id)
        if rec.recovered_count > (prev.recovered_count if prev else 0):
            by_reason["Recovered"].append(rec.id)
        seen = {(e.type, e.operation, e.timestamp, e.message) for e in (prev.events if prev else [])}
        for e in rec.events:
            if e.type == "Failed" and (e.type, e.operation, e.timestamp, e.message) not in seen:
                failures.append((rec.id, e.operation.lower(), e.message))
    out = []
    for reason, verb in (("Applied", "apply"), ("Recovered", "recover")):
        ids = by_reason.get(reason, [])
        if len(ids) > PER_TARGET_LIMIT:
            out.append(
                KubeEvent(
                    NORMAL, reason, f"Successfully {verb} chaos for {len(ids)} targets ({', '.join(ids[:3])}, ...)"
                )
            )
        else:
            out += [KubeEvent(NORMAL, reason, f"Successfully {verb} chaos for {i}") for i in ids]
    if len(failures) > PER_TARGET_LIMIT:
        first = failures[0]
        out.append(
            KubeEvent(
                WARNING,
                "Failed",
                f"Failed to {first[1]} chaos for {len(failures)} targets; first: {first[0]}: {first[2]}",
            )
        )
    else:
        out += [KubeEvent(WARNING, "Failed", f"Failed to {op} chaos for {i}: {msg}") for i, op, msg in failures]
    return out


def selection_event(before: Obj | None, after: Obj) -> KubeEvent | None:
    def failure(obj: Obj | None) -> str:
        for c in _status(obj).conditions:
            if c.type == "Selected" and c.reason == "SelectionFailed":
                return c.message
        return ""

    message = failure(after)
    if message and message != failure(before):
        return KubeEvent(WARNING, "Failed", f"Failed to select targets: {message}")
    return None


def not_supported_event(before: Obj | None, after: Obj) -> KubeEvent | None:
    def reason(obj: Obj | None) -> str:
        conditions = ((obj or {}).get("status") or {}).get("conditions") or []
        return next((c.get("message", "") for c in conditions if c.get("reason") == "NotSupported"), "")

    message = reason(after)
    return KubeEvent(WARNING, "NotSupported", message) if message and message != reason(before) else None


def updated(field: str) -> KubeEvent:
    return KubeEvent(NORMAL, "Updated", f"Successfully update {field} of resource")


def finalizer_events(*, removed: bool) -> list[KubeEvent]:
    if removed:
        return [KubeEvent(NORMAL, "FinalizerRemoved", "Finalizer has been removed"), updated("finalizer")]
    return [KubeEvent(NORMAL, "FinalizerInited", "Finalizer has been inited"), updated("finalizer")]


def _records(obj: Obj | None) -> list[tuple[str, str, str]]:
    return [(r.id, r.selector_key, r.phase) for r in _status(obj).experiment.container_records or []]


def for_write(before: Obj | None, after: Obj) -> list[KubeEvent]:
    """Every Event one recorder write (object `before` -> `after`) should produce, in order."""
    if (event := not_supported_event(before, after)) is not None:
        return [event]
    out = []
    if (phase := phase_event(before, after)) is not None:
        out += [phase, updated("desiredPhase")]
    if (selection := selection_event(before, after)) is not None:
        out.append(selection)
    out += target_events(before, after)
    if _records(before) != _records(after):
        out.append(updated("records"))
    return out
