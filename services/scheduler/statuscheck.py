"""StatusCheck's pure core: when to probe next and how probe outcomes fold into Chaos Mesh's status
(records, count, conditions Completed / DurationExceed / FailureThresholdExceed /
SuccessThresholdExceed). The clock is injected; the HTTP probe itself lives at the edge (probe.py).

The state is seeded from the object's status, so a restarted scheduler continues the same check
(its history, its count, its start time) instead of starting over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from chaosbus.common.crd.orchestration import StatusCheckSpec

# Validation is shared with admission (libs/common); re-exported for the scheduler's modules.
from chaosbus.common.crd.statuscheck import InvalidCheck as InvalidCheck
from chaosbus.common.crd.statuscheck import status_code_range as status_code_range
from chaosbus.common.crd.statuscheck import validate as validate
from chaosbus.common.durations import parse_duration
from chaosbus.common.objects import parse_rfc3339, rfc3339

SUCCESS, FAILURE = "Success", "Failure"
COMPLETED, DURATION_EXCEED = "Completed", "DurationExceed"
FAILURE_EXCEED, SUCCESS_EXCEED = "FailureThresholdExceed", "SuccessThresholdExceed"
CONDITION_TYPES = (COMPLETED, DURATION_EXCEED, FAILURE_EXCEED, SUCCESS_EXCEED)


@dataclass
class CheckState:
    """One StatusCheck in progress: its history (kept long enough to judge the thresholds even when
    recordsHistoryLimit is smaller) and its conditions.
    """

    spec: StatusCheckSpec
    start: float
    records: list[tuple[float, str]] = field(default_factory=list)  # (startTime, outcome), oldest first
    count: int = 0
    completion: float | None = None
    true_since: dict[str, float] = field(default_factory=dict)  # condition type -> when it became True
    last_probe: float | None = None

    @property
    def completed(self) -> bool:
        return COMPLETED in self.true_since

    def duration_s(self) -> float | None:
        return parse_duration(self.spec.duration) if self.spec.duration else None


def from_status(spec: StatusCheckSpec, created_at: float, status: dict[str, Any] | None) -> CheckState:
    """The check as its stored status describes it (or a fresh one from its creation time)."""
    status = status or {}
    start = _time(status.get("startTime")) or created_at
    state = CheckState(spec=spec, start=start, count=int(status.get("count") or 0))
    for rec in status.get("records") or []:
        at = _time(rec.get("startTime"))
        if at is not None and rec.get("outcome") in (SUCCESS, FAILURE):
            state.records.append((at, str(rec["outcome"])))
    state.completion = _time(status.get("completionTime"))
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in CONDITION_TYPES:
            state.true_since[cond["type"]] = _time(cond.get("lastTransitionTime")) or start
        if cond.get("lastProbeTime"):
            state.last_probe = _time(cond.get("lastProbeTime"))
    return state


def next_probe(state: CheckState) -> float | None:
    """When the next probe is due; None once the check has completed."""
    if state.completed:
        return None
    if not state.records:
        return state.start
    return state.records[-1][0] + state.spec.interval_seconds


def next_wakeup(state: CheckState) -> float | None:
    """The earliest time something happens without a probe result: a probe or the duration's end."""
    times = [t for t in (next_probe(state), _end(state)) if t is not None]
    return None if state.completed or not times else min(times)


def _end(state: CheckState) -> float | None:
    d = state.duration_s()
    return None if d is None else state.start + d


def tick(state: CheckState, now: float) -> bool:
    """Complete the check when its duration has passed. True if anything changed."""
    end = _end(state)
    if state.completed or end is None or now < end:
        return False
    _complete(state, DURATION_EXCEED, now)
    return True


def fold(state: CheckState, started_at: float, ok: bool, now: float) -> None:
    """Add one probe outcome and judge the conditions as Chaos Mesh does: each threshold condition
    says whether the newest records reach it (SuccessThresholdExceed too in Continuous mode, where
    it can turn False again and only decides, at completion, whether the check passed); the check
    completes on its duration, its failure threshold, or (Synchronous) its success threshold.
    A probe that ends after the check completed (duration, deletion) is dropped.
    """
    if state.completed:
        return
    state.last_probe = now
    state.records.append((started_at, SUCCESS if ok else FAILURE))
    state.count += 1
    keep = max(state.spec.records_history_limit, state.spec.failure_threshold, state.spec.success_threshold)
    del state.records[:-keep]
    if _last_all(state, SUCCESS, state.spec.success_threshold):
        state.true_since.setdefault(SUCCESS_EXCEED, now)
    else:
        state.true_since.pop(SUCCESS_EXCEED, None)
    tick(state, now)  # the duration first: Chaos Mesh's precedence when both end the check
    if _last_all(state, FAILURE, state.spec.failure_threshold):
        _complete(state, FAILURE_EXCEED, now)
    elif state.spec.mode == "Synchronous" and SUCCESS_EXCEED in state.true_since:
        _complete(state, SUCCESS_EXCEED, now)


def _last_all(state: CheckState, outcome: str, n: int) -> bool:
    tail = state.records[-n:]
    return len(tail) == n and all(o == outcome for _, o in tail)


def _complete(state: CheckState, reason: str, now: float) -> None:
    state.true_since.setdefault(reason, now)
    state.true_since.setdefault(COMPLETED, now)
    state.completion = state.completion or now


def completed_reason(state: CheckState) -> str:
    """Chaos Mesh's reason on the Completed condition: what completed the check, duration first
    (its precedence); "" while the check runs.
    """
    if not state.completed:
        return ""
    cause = next((c for c in (DURATION_EXCEED, FAILURE_EXCEED, SUCCESS_EXCEED) if c in state.true_since), "")
    return f"StatusCheck{cause}" if cause else ""


def completion_events(state: CheckState) -> list[tuple[str, str, str]]:
    """The Events (type, reason, message) Chaos Mesh records on a check that completes: the
    completion, then each condition that is True.
    """
    reason = completed_reason(state)
    if not reason:
        return []
    texts = {
        DURATION_EXCEED: ("Warning", "duration exceed"),
        FAILURE_EXCEED: ("Warning", "failure threshold exceed"),
        SUCCESS_EXCEED: ("Normal", "success threshold exceed"),
    }
    return [("Normal", "StatusCheckCompleted", f"status check completed: {reason}")] + [
        (texts[c][0], f"StatusCheck{c}", texts[c][1])
        for c in (DURATION_EXCEED, FAILURE_EXCEED, SUCCESS_EXCEED)
        if c in state.true_since
    ]


def status_of(state: CheckState) -> dict[str, Any]:
    """The status in Chaos Mesh's shape (every condition carries `reason`, "" but on Completed);
    records limited to recordsHistoryLimit (newest kept).
    """
    probe = rfc3339(state.last_probe) if state.last_probe is not None else None
    conditions = []
    for ctype in CONDITION_TYPES:
        since = state.true_since.get(ctype)
        cond: dict[str, Any] = {
            "type": ctype,
            "status": "True" if since is not None else "False",
            "reason": completed_reason(state) if ctype == COMPLETED else "",
            "lastTransitionTime": rfc3339(since if since is not None else state.start),
        }
        if probe:
            cond["lastProbeTime"] = probe
        conditions.append(cond)
    records = state.records[-state.spec.records_history_limit :]
    out: dict[str, Any] = {
        "startTime": rfc3339(state.start),
        "count": state.count,
        "conditions": conditions,
        "records": [{"startTime": rfc3339(at), "outcome": o} for at, o in records],
    }
    out["completionTime"] = rfc3339(state.completion) if state.completion is not None else None
    return out


def succeeded(status: dict[str, Any] | None) -> bool | None:
    """For a workflow step: None while the check runs; then whether it passed, as Chaos Mesh
    judges it for `abortWithStatusCheck`: SuccessThresholdExceed is True at completion (in
    Continuous mode: the newest `successThreshold` probes succeeded).
    """
    conds = {c.get("type"): c.get("status") for c in (status or {}).get("conditions") or []}
    if conds.get(COMPLETED) != "True":
        return None
    return conds.get(SUCCESS_EXCEED) == "True"


def decode_spec(raw: Any) -> StatusCheckSpec:
    try:
        return msgspec.convert(raw or {}, StatusCheckSpec)
    except msgspec.ValidationError as e:
        raise InvalidCheck(f"spec: {e}") from None


def _time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None
