"""Experiment status aggregation in Chaos Mesh's exact shape, as pure functions over Structs.

The recorder is the only writer of an experiment's status. It folds two streams into it: the
scheduler's `ExperimentDecision` (desired phase, and the selected targets once) and the
injectors' `ResultBatch`es (per-target outcomes). Each function takes a `ChaosStatus` and returns
a new one; inputs are never mutated (Structs are treated as values, changed through
`msgspec.structs.replace`). Timestamps are passed in; nothing here reads a clock.

Differences from Chaos Mesh, on purpose:

* Conditions are always listed in the fixed order Selected, AllInjected, AllRecovered, Paused
  (Chaos Mesh builds them from a Go map, so its order is random).
* Results are keyed by (record id, selectorKey): NetworkChaos may select the same pod under `.`
  and `.Target`, and those are two records.
* Without records, AllInjected and AllRecovered are "False", as the reference (§2.2) specifies;
  Chaos Mesh's condition controller loops over nil records and so reports both "True".
* An empty target list in a decision leaves the records unset, like a failed selection: Chaos Mesh
  never creates an empty record list either.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
from msgspec.structs import replace

from chaosbus.common.crd.status import (
    CONDITION_TYPES,
    INJECTED,
    NOT_INJECTED,
    PHASE_DELETING,
    PHASE_FAILED,
    PHASE_FINISHED,
    PHASE_INJECTING,
    PHASE_PAUSED,
    PHASE_RECOVERING,
    PHASE_RUNNING,
    STOP,
    ChaosStatus,
    Condition,
    Record,
    RecordEvent,
)
from chaosbus.common.messages import ExperimentDecision, RecordRef, ResultBatch, TargetResult

SUCCEEDED = "Succeeded"
FAILED = "Failed"
_OPERATIONS = {"apply": "Apply", "recover": "Recover"}


def apply_decision(status: ChaosStatus | None, decision: ExperimentDecision) -> ChaosStatus:
    """Fold a scheduler decision into the status.

    Sets `experiment.desiredPhase`. Creates one `Not Injected` record per selected target, but only
    the first time targets arrive: targets are selected once, so existing records are never
    re-created, reordered or dropped by a later decision.

    Args:
        status: The current status, or None for an object that has none yet.
        decision: The scheduler's latest view of the experiment.

    Returns:
        The new status.
    """
    current = status if status is not None else ChaosStatus()
    records = current.experiment.container_records
    if records is None and decision.records:
        records = _new_records(decision.records)
    experiment = replace(current.experiment, desired_phase=decision.desired_phase, container_records=records)
    return replace(current, experiment=experiment)


def apply_results(status: ChaosStatus, batch: ResultBatch, *, now: str, max_events: int = 10) -> ChaosStatus:
    """Fold an injector's per-target results into the records.

    A successful apply makes the record `Injected` and bumps `injectedCount`; a successful recover
    makes it `Not Injected` and bumps `recoveredCount`; each appends a `Succeeded` event. A failure
    appends a `Failed` event carrying the message and leaves the phase alone. Results for records
    that do not exist are ignored; the batch's generation is not consulted.

    Args:
        status: The current status.
        batch: One NodeCommand's results, applied in order.
        now: RFC 3339 timestamp for the new events.
        max_events: Events kept per record; the oldest are dropped first.

    Returns:
        The new status (the same object when it has no records).
    """
    records = status.experiment.container_records
    if records is None:
        return status
    index = {(r.id, r.selector_key): i for i, r in enumerate(records)}
    updated = list(records)
    for result in batch.results:
        i = index.get((result.target_id, result.selector_key))
        if i is not None:
            updated[i] = _apply_result(updated[i], result, now, max_events)
    return replace(status, experiment=replace(status.experiment, container_records=updated))


def conditions(status: ChaosStatus, *, paused: bool) -> list[Condition]:
    """The four conditions Chaos Mesh writes, always all of them, in a fixed order.

    `Selected`: records exist. `AllInjected` / `AllRecovered`: records exist and every phase is
    `Injected` / `Not Injected`. `Paused`: the pause annotation is "true" (`paused`).

    Args:
        status: The status to describe.
        paused: Whether the object carries `experiment.chaos-mesh.org/pause: "true"`.

    Returns:
        Selected, AllInjected, AllRecovered, Paused, with status "True" or "False".
    """
    records = status.experiment.container_records
    selected = records is not None
    values = {
        "Selected": selected,
        "AllInjected": selected and _all_in_phase(records, INJECTED),
        "AllRecovered": selected and _all_in_phase(records, NOT_INJECTED),
        "Paused": paused,
    }
    return [Condition(type=kind, status=_condition_status(values[kind])) for kind in CONDITION_TYPES]


def with_conditions(status: ChaosStatus, *, paused: bool) -> ChaosStatus:
    """Return the status with `conditions` recomputed (see `conditions`)."""
    return replace(status, conditions=conditions(status, paused=paused))


def all_recovered(status: ChaosStatus) -> bool:
    """Whether nothing is left injected, so the `chaos-mesh/records` finalizer may be removed.

    Unlike the AllRecovered condition this is True without records: nothing was ever injected.
    """
    return _all_in_phase(status.experiment.container_records, NOT_INJECTED)


def is_finished(status: ChaosStatus, *, one_shot: bool, duration_exceeded: bool) -> bool:
    """Chaos Mesh's "finished" test (Schedule concurrency/GC, UI phase).

    Args:
        status: The experiment's status.
        one_shot: Whether the kind/action is one-shot (pod-kill, container-kill, ...).
        duration_exceeded: Whether creationTimestamp + duration has passed; False when the
            experiment has no duration (such an experiment never finishes on its own).

    Returns:
        One-shot: records exist and all are `Injected`. Otherwise: desiredPhase is `Stop`, every
        record is `Not Injected`, and the duration is exceeded.
    """
    records = status.experiment.container_records
    if one_shot:
        return bool(records) and _all_in_phase(records, INJECTED)
    stopped = status.experiment.desired_phase == STOP
    return stopped and _all_in_phase(records, NOT_INJECTED) and duration_exceeded


def summary(status: ChaosStatus) -> dict[str, int]:
    """Counts for the CLI and metrics.

    Returns:
        `total` records, how many are `injected` and `notInjected` (the `…/Wait` phases count in
        neither), and `failedEvents`, the Failed events still kept across all records.
    """
    records = status.experiment.container_records or []
    return {
        "total": len(records),
        "injected": sum(r.phase == INJECTED for r in records),
        "notInjected": sum(r.phase == NOT_INJECTED for r in records),
        "failedEvents": sum(e.type == FAILED for r in records for e in r.events),
    }


def phase(status: ChaosStatus, *, paused: bool, deleting: bool, one_shot: bool, selection_failed: bool) -> str:
    """The experiment's phase for `status.phase`, from what the recorder knows (status, object).

    In order: Deleting (deletionTimestamp set); Paused (pause annotation, except one-shot kinds,
    which ignore pause as in Chaos Mesh); no records: Failed if selection failed, else Injecting;
    Failed when a target is not yet where desiredPhase wants it and its latest attempt failed (a
    retry that succeeds moves the phase on); Finished when a one-shot experiment injected every
    target or a stopped one recovered every target (desiredPhase Stop without pause or deletion
    means the duration is over); Running when every target is injected; else Injecting (Run) or
    Recovering (Stop).
    """
    if deleting:
        return PHASE_DELETING
    if paused and not one_shot:
        return PHASE_PAUSED
    records = status.experiment.container_records
    if records is None:
        return PHASE_FAILED if selection_failed else PHASE_INJECTING
    run = status.experiment.desired_phase != STOP
    wanted = INJECTED if run else NOT_INJECTED
    if any(r.phase != wanted and r.events and r.events[-1].type == FAILED for r in records):
        return PHASE_FAILED
    if _all_in_phase(records, wanted):
        return PHASE_FINISHED if one_shot or not run else PHASE_RUNNING
    return PHASE_INJECTING if run else PHASE_RECOVERING


FAILURE_REASON = "Failed"  # the AllInjected condition's reason when the scheduler cannot run the experiment


def with_failure(status: ChaosStatus, failure: str, *, deleting: bool) -> ChaosStatus:
    """The scheduler could not run the experiment: phase Failed (unless it is being deleted) and
    the reason on the AllInjected condition, where `kubectl describe` shows it.
    """
    conditions = [
        replace(c, reason=FAILURE_REASON, message=failure[: MAX_MESSAGE_CHARS * 4]) if c.type == "AllInjected" else c
        for c in status.conditions
    ]
    return replace(status, conditions=conditions, phase=status.phase if deleting else PHASE_FAILED)


def failure_of(status: ChaosStatus) -> str:
    """The failure `with_failure` recorded, or ""."""
    return next((c.message for c in status.conditions if c.type == "AllInjected" and c.reason == FAILURE_REASON), "")


def with_summary(
    status: ChaosStatus, *, paused: bool, deleting: bool, one_shot: bool, selection_failed: bool = False
) -> ChaosStatus:
    """Return the status with chaosbus's summary fields (`phase`, `injected`, `total`) recomputed."""
    counts = summary(status)
    current = phase(status, paused=paused, deleting=deleting, one_shot=one_shot, selection_failed=selection_failed)
    return replace(status, phase=current, injected=counts["injected"], total=counts["total"])


MAX_STATUS_BYTES = 256 * 1024
MAX_MESSAGE_CHARS = 256


def bounded(status: ChaosStatus, *, max_bytes: int = MAX_STATUS_BYTES) -> ChaosStatus:
    """Keep the encoded status under `max_bytes` (Kubernetes objects are limited to about 1.5 MiB,
    and every watcher receives the whole object on each write).

    Event messages are cut to MAX_MESSAGE_CHARS; if the status is still too large, fewer events are
    kept per record (newest first: 5, 2, 1, then none). Records and counts are never dropped.

    Args:
        status: The status to bound.
        max_bytes: Size budget of the JSON-encoded status.

    Returns:
        The status, unchanged when it already fits.
    """
    records = status.experiment.container_records
    if not records or _size(status) <= max_bytes:
        return status
    records = [replace(r, events=[_short(e) for e in r.events]) for r in records]
    for keep in (5, 2, 1, 0):
        trimmed = replace(status, experiment=replace(status.experiment, container_records=records))
        if _size(trimmed) <= max_bytes:
            return trimmed
        records = [
            replace(r, events=r.events[max(0, len(r.events) - keep) :]) if keep else replace(r, events=[])
            for r in records
        ]
    return replace(status, experiment=replace(status.experiment, container_records=records))


def _size(status: ChaosStatus) -> int:
    return len(msgspec.json.encode(status))


def _short(event: RecordEvent) -> RecordEvent:
    if len(event.message) <= MAX_MESSAGE_CHARS:
        return event
    return replace(event, message=event.message[: MAX_MESSAGE_CHARS - 1] + "…")


# --- helpers ------------------------------------------------------------------------------------


def _new_records(refs: Iterable[RecordRef]) -> list[Record]:
    """One `Not Injected` record per target, in selection order; a repeated ref is kept once."""
    seen: dict[tuple[str, str], Record] = {}
    for ref in refs:
        seen.setdefault((ref.id, ref.selector_key), Record(id=ref.id, selector_key=ref.selector_key))
    return list(seen.values())


def _apply_result(record: Record, result: TargetResult, now: str, max_events: int) -> Record:
    operation = _OPERATIONS[result.op]
    if not result.ok:
        event = RecordEvent(type=FAILED, operation=operation, timestamp=now, message=result.message)
        return _with_event(record, event, max_events)
    event = RecordEvent(type=SUCCEEDED, operation=operation, timestamp=now, message=result.message)
    if result.op == "apply":
        record = replace(record, phase=INJECTED, injected_count=record.injected_count + 1)
    else:
        record = replace(record, phase=NOT_INJECTED, recovered_count=record.recovered_count + 1)
    return _with_event(record, event, max_events)


def _with_event(record: Record, event: RecordEvent, max_events: int) -> Record:
    events = [*record.events, event]
    return replace(record, events=events[max(0, len(events) - max_events) :])


def _all_in_phase(records: Iterable[Record] | None, phase: str) -> bool:
    return all(r.phase == phase for r in records or ())


def _condition_status(value: bool) -> str:
    return "True" if value else "False"
