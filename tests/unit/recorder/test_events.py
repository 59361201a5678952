"""Kubernetes Event reasons derived from a status write, and the status size bound."""

from __future__ import annotations

from typing import Any

import msgspec

from chaosbus.common.crd.status import ChaosStatus, ExperimentStatus, Record, RecordEvent
from chaosbus.recorder import status as st
from chaosbus.recorder.events import for_write


def obj(phase: str = "", records: list[Record] | None = None, **meta: Any) -> dict[str, Any]:
    status = ChaosStatus(experiment=ExperimentStatus(desired_phase=phase, container_records=records))
    return {
        "kind": "NetworkChaos",
        "metadata": {"name": "x", "namespace": "d", **meta},
        "status": msgspec.to_builtins(status),
    }


def rec(i: int, injected: int = 0, recovered: int = 0, events: list[RecordEvent] | None = None) -> Record:
    return Record(
        id=f"d/p{i}",
        selector_key=".",
        phase="Injected" if injected > recovered else "Not Injected",
        injected_count=injected,
        recovered_count=recovered,
        events=events or [],
    )


def reasons(before: dict[str, Any] | None, after: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in for_write(before, after)]


UPDATED = ("Normal", "Updated")


def test_phase_changes() -> None:
    assert reasons(obj(), obj("Run")) == [("Normal", "Started"), UPDATED]
    assert reasons(obj("Run"), obj("Stop")) == [("Normal", "TimeUp"), UPDATED]
    paused = obj("Stop", annotations={"experiment.chaos-mesh.org/pause": "true"})
    assert reasons(obj("Run"), paused) == [("Normal", "Paused"), UPDATED]
    assert reasons(obj("Run"), obj("Stop", deletionTimestamp="2026-01-01T00:00:00Z")) == [
        ("Normal", "Deleted"),
        UPDATED,
    ]
    assert reasons(obj("Run"), obj("Run")) == []
    assert [e.message for e in for_write(obj(), obj("Run"))][1] == "Successfully update desiredPhase of resource"


def test_target_outcomes() -> None:
    failed = RecordEvent(type="Failed", operation="Apply", timestamp="t1", message="no such pid")
    before = obj("Run", [rec(0), rec(1)])
    after = obj("Run", [rec(0, injected=1), rec(1, events=[failed])])
    events = for_write(before, after)
    assert [(e.type, e.reason, e.message) for e in events] == [
        ("Normal", "Applied", "Successfully apply chaos for d/p0"),
        ("Warning", "Failed", "Failed to apply chaos for d/p1: no such pid"),
        ("Normal", "Updated", "Successfully update records of resource"),
    ]
    assert reasons(after, obj("Run", [rec(0, injected=1, recovered=1), rec(1, events=[failed])])) == [
        ("Normal", "Recovered"),
        UPDATED,
    ]


def test_many_targets_are_summarised() -> None:
    before = obj("Run", [rec(i) for i in range(1000)])
    after = obj("Run", [rec(i, injected=1) for i in range(1000)])
    [event, updated] = for_write(before, after)
    assert event.reason == "Applied" and "1000 targets" in event.message
    assert updated.reason == "Updated"


def test_selection_failure_is_a_warning_once() -> None:
    after = obj("Run")
    after["status"]["conditions"] = [
        {"type": "Selected", "status": "False", "reason": "SelectionFailed", "message": "no pod is selected"}
    ]
    assert reasons(obj(), after) == [("Normal", "Started"), UPDATED, ("Warning", "Failed")]
    assert reasons(after, after) == []


def test_a_thousand_targets_stay_well_under_a_mebibyte() -> None:
    long = "x" * 2000
    events = [RecordEvent(type="Failed", operation="Apply", timestamp="2026-01-01T00:00:00Z", message=long)] * 10
    records = [
        Record(
            id=f"namespace-{i % 7}/some-rather-long-pod-name-{i}/container",
            selector_key=".Target",
            injected_count=3,
            recovered_count=2,
            events=events,
        )
        for i in range(1000)
    ]
    status = ChaosStatus(experiment=ExperimentStatus(desired_phase="Run", container_records=records))
    assert len(msgspec.json.encode(status)) > 1024 * 1024
    bounded = st.bounded(status)
    size = len(msgspec.json.encode(bounded))
    assert size <= st.MAX_STATUS_BYTES < 1024 * 1024
    assert [r.id for r in bounded.experiment.container_records or []] == [r.id for r in records]
    assert all(r.injected_count == 3 for r in bounded.experiment.container_records or [])


def test_small_status_is_untouched() -> None:
    status = ChaosStatus(experiment=ExperimentStatus(desired_phase="Run", container_records=[rec(0, injected=1)]))
    assert st.bounded(status) is status
