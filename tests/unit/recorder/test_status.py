"""Status aggregation: records created once, counts and events, conditions, finished, summary."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import pytest

from chaosbus.common.crd.status import ChaosStatus, ExperimentStatus, Record, RecordEvent
from chaosbus.common.messages import ExperimentDecision, RecordRef, ResultBatch, TargetResult
from chaosbus.recorder.status import (
    all_recovered,
    apply_decision,
    apply_results,
    conditions,
    is_finished,
    summary,
    with_conditions,
)

NOW = "2026-01-02T03:04:05Z"
NI, INJ = "Not Injected", "Injected"


def decision(phase: Literal["Run", "Stop"] = "Run", records: list[str] | None = None, **kw: Any) -> ExperimentDecision:
    refs = None if records is None else [RecordRef(id=r) for r in records]
    return ExperimentDecision(
        experiment_uid="u1",
        generation=1,
        kind="PodChaos",
        namespace="ns",
        name="x",
        desired_phase=phase,
        records=refs,
        **kw,
    )


def result(
    target: str, op: Literal["apply", "recover"] = "apply", ok: bool = True, message: str = "", key: str = "."
) -> TargetResult:
    return TargetResult(target_id=target, op=op, ok=ok, message=message, selector_key=key)


def batch(*results: TargetResult, generation: int = 1) -> ResultBatch:
    return ResultBatch(
        command_id="c1",
        experiment_uid="u1",
        generation=generation,
        kind="PodChaos",
        namespace="ns",
        name="x",
        node="n1",
        results=list(results),
    )


def status_with(*phases: str, desired: str = "Run") -> ChaosStatus:
    records = [Record(id=f"ns/p{i}", selector_key=".", phase=p) for i, p in enumerate(phases)]
    return ChaosStatus(experiment=ExperimentStatus(desired_phase=desired, container_records=records))


def no_records(desired: str = "Run") -> ChaosStatus:
    return ChaosStatus(experiment=ExperimentStatus(desired_phase=desired))


def ids(status: ChaosStatus) -> list[str]:
    return [r.id for r in status.experiment.container_records or []]


def record(status: ChaosStatus, i: int = 0) -> Record:
    assert status.experiment.container_records is not None
    return status.experiment.container_records[i]


# --- apply_decision --------------------------------------------------------------------------


def test_decision_on_no_status_sets_desired_phase() -> None:
    status = apply_decision(None, decision("Run"))
    assert status.experiment.desired_phase == "Run"
    assert status.experiment.container_records is None


def test_decision_creates_one_not_injected_record_per_target_in_order() -> None:
    status = apply_decision(None, decision(records=["ns/b", "ns/a"]))
    assert [(r.id, r.selector_key, r.phase, r.injected_count) for r in status.experiment.container_records or []] == [
        ("ns/b", ".", NI, 0),
        ("ns/a", ".", NI, 0),
    ]


def test_decision_keeps_selector_keys() -> None:
    refs = [RecordRef(id="ns/a"), RecordRef(id="ns/a", selector_key=".Target")]
    status = apply_decision(None, msgspec.structs.replace(decision(), records=refs))
    assert [(r.id, r.selector_key) for r in status.experiment.container_records or []] == [
        ("ns/a", "."),
        ("ns/a", ".Target"),
    ]


def test_decision_drops_repeated_refs() -> None:
    assert ids(apply_decision(None, decision(records=["ns/a", "ns/a"]))) == ["ns/a"]


@pytest.mark.parametrize("later", [["ns/z"], ["ns/b", "ns/a"], []])
def test_records_are_created_once_and_never_replaced(later: list[str]) -> None:
    first = apply_results(apply_decision(None, decision(records=["ns/a", "ns/b"])), batch(result("ns/a")), now=NOW)
    again = apply_decision(first, decision("Stop", records=later))
    assert again.experiment.container_records == first.experiment.container_records
    assert again.experiment.desired_phase == "Stop"


def test_empty_target_list_leaves_records_unset() -> None:
    assert apply_decision(None, decision(records=[])).experiment.container_records is None


def test_records_arrive_on_a_later_decision() -> None:
    status = apply_decision(apply_decision(None, decision()), decision(records=["ns/a"]))
    assert ids(status) == ["ns/a"]


def test_decision_does_not_mutate_its_input() -> None:
    before = status_with(INJ, desired="Run")
    snapshot = msgspec.json.encode(before)
    apply_decision(before, decision("Stop", records=["ns/q"]))
    assert msgspec.json.encode(before) == snapshot


def test_decision_keeps_conditions() -> None:
    status = with_conditions(status_with(INJ), paused=False)
    assert apply_decision(status, decision("Stop")).conditions == status.conditions


# --- apply_results ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "op", "phase", "injected", "recovered", "operation"),
    [
        (NI, "apply", INJ, 1, 0, "Apply"),
        (INJ, "recover", NI, 0, 1, "Recover"),
        (INJ, "apply", INJ, 1, 0, "Apply"),  # a re-assert still counts, as the brief specifies
    ],
)
def test_successful_result_sets_phase_count_and_event(
    start: str, op: Literal["apply", "recover"], phase: str, injected: int, recovered: int, operation: str
) -> None:
    rec = record(apply_results(status_with(start), batch(result("ns/p0", op)), now=NOW))
    assert (rec.phase, rec.injected_count, rec.recovered_count) == (phase, injected, recovered)
    assert rec.events == [RecordEvent(type="Succeeded", operation=operation, timestamp=NOW)]


@pytest.mark.parametrize(("start", "op", "operation"), [(NI, "apply", "Apply"), (INJ, "recover", "Recover")])
def test_failure_keeps_phase_and_records_the_message(
    start: str, op: Literal["apply", "recover"], operation: str
) -> None:
    rec = record(apply_results(status_with(start), batch(result("ns/p0", op, ok=False, message="boom")), now=NOW))
    assert (rec.phase, rec.injected_count, rec.recovered_count) == (start, 0, 0)
    assert rec.events == [RecordEvent(type="Failed", operation=operation, timestamp=NOW, message="boom")]


def test_counts_accumulate_over_cycles() -> None:
    status = status_with(NI)
    for op in ("apply", "recover", "apply", "recover", "apply"):
        status = apply_results(status, batch(result("ns/p0", op)), now=NOW)
    rec = record(status)
    assert (rec.phase, rec.injected_count, rec.recovered_count, len(rec.events)) == (INJ, 3, 2, 5)


def test_results_for_unknown_records_are_ignored() -> None:
    status = status_with(NI)
    assert apply_results(status, batch(result("ns/ghost")), now=NOW) == status


def test_selector_key_distinguishes_records_with_the_same_id() -> None:
    status = ChaosStatus(
        experiment=ExperimentStatus(
            container_records=[Record(id="ns/a", selector_key="."), Record(id="ns/a", selector_key=".Target")]
        )
    )
    after = apply_results(status, batch(result("ns/a", key=".Target")), now=NOW)
    assert [r.phase for r in after.experiment.container_records or []] == [NI, INJ]


def test_results_apply_in_order_within_a_batch() -> None:
    after = apply_results(status_with(NI), batch(result("ns/p0"), result("ns/p0", "recover")), now=NOW)
    assert record(after).phase == NI
    assert [e.operation for e in record(after).events] == ["Apply", "Recover"]


def test_results_touch_only_their_record() -> None:
    after = apply_results(status_with(NI, NI), batch(result("ns/p1")), now=NOW)
    assert record(after, 0) == Record(id="ns/p0", selector_key=".")


@pytest.mark.parametrize(("max_events", "results", "kept"), [(10, 12, 10), (3, 5, 3), (3, 2, 2), (1, 4, 1)])
def test_events_are_capped_dropping_the_oldest(max_events: int, results: int, kept: int) -> None:
    status = status_with(NI)
    for i in range(results):
        status = apply_results(
            status, batch(result("ns/p0", ok=False, message=str(i))), now=f"t{i}", max_events=max_events
        )
    assert [e.message for e in record(status).events] == [str(i) for i in range(results - kept, results)]


def test_generation_is_not_consulted() -> None:
    stale = apply_results(status_with(NI), batch(result("ns/p0"), generation=0), now=NOW)
    assert record(stale).phase == INJ


def test_results_without_records_leave_status_alone() -> None:
    status = no_records()
    assert apply_results(status, batch(result("ns/p0")), now=NOW) is status


def test_results_do_not_mutate_their_input() -> None:
    before = status_with(NI)
    snapshot = msgspec.json.encode(before)
    apply_results(before, batch(result("ns/p0")), now=NOW)
    assert msgspec.json.encode(before) == snapshot


def test_success_message_is_kept() -> None:
    rec = record(apply_results(status_with(INJ), batch(result("ns/p0", "recover", message="pod gone")), now=NOW))
    assert rec.events[0].message == "pod gone"


# --- conditions ------------------------------------------------------------------------------


def cond(status: ChaosStatus, paused: bool = False) -> dict[str, str]:
    return {c.type: c.status for c in conditions(status, paused=paused)}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (no_records(), ("False", "False", "False")),
        (status_with(NI, NI), ("True", "False", "True")),
        (status_with(INJ, NI), ("True", "False", "False")),
        (status_with(INJ, INJ), ("True", "True", "False")),
        (status_with(INJ, "Injected/Wait"), ("True", "False", "False")),
        (status_with(NI, "Not Injected/Wait"), ("True", "False", "False")),
    ],
)
def test_conditions_follow_the_records(status: ChaosStatus, expected: tuple[str, str, str]) -> None:
    got = cond(status)
    assert (got["Selected"], got["AllInjected"], got["AllRecovered"]) == expected


@pytest.mark.parametrize(("paused", "expected"), [(True, "True"), (False, "False")])
def test_paused_condition(paused: bool, expected: str) -> None:
    assert cond(status_with(NI), paused=paused)["Paused"] == expected


@pytest.mark.parametrize("status", [no_records(), status_with(INJ)])
def test_conditions_are_all_four_in_fixed_order_without_reason(status: ChaosStatus) -> None:
    got = conditions(status, paused=True)
    assert [c.type for c in got] == ["Selected", "AllInjected", "AllRecovered", "Paused"]
    assert all(c.reason == "" for c in got)


def test_with_conditions_replaces_the_list() -> None:
    stale = msgspec.structs.replace(status_with(INJ), conditions=conditions(no_records(), paused=True))
    fresh = with_conditions(stale, paused=False)
    assert fresh.conditions == conditions(status_with(INJ), paused=False)
    assert fresh.experiment == stale.experiment


# --- all_recovered, is_finished, summary -----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (no_records(), True),
        (status_with(NI, NI), True),
        (status_with(NI, INJ), False),
        (status_with("Not Injected/Wait"), False),
    ],
)
def test_all_recovered(status: ChaosStatus, expected: bool) -> None:
    assert all_recovered(status) is expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (status_with(INJ, INJ), True),
        (status_with(INJ, NI), False),
        (status_with(INJ, "Injected/Wait"), False),
        (no_records(), False),
        (status_with(INJ, INJ, desired="Stop"), True),
    ],
)
def test_one_shot_finishes_when_everything_is_injected(status: ChaosStatus, expected: bool) -> None:
    assert is_finished(status, one_shot=True, duration_exceeded=False) is expected


@pytest.mark.parametrize(
    ("status", "exceeded", "expected"),
    [
        (status_with(NI, NI, desired="Stop"), True, True),
        (status_with(NI, NI, desired="Stop"), False, False),  # paused, not yet over
        (status_with(NI, NI, desired="Run"), True, False),
        (status_with(NI, INJ, desired="Stop"), True, False),
        (status_with(NI, "Not Injected/Wait", desired="Stop"), True, False),
        (no_records("Stop"), True, True),
        (no_records(""), True, False),
    ],
)
def test_duration_experiment_finishes_when_stopped_recovered_and_over(
    status: ChaosStatus, exceeded: bool, expected: bool
) -> None:
    assert is_finished(status, one_shot=False, duration_exceeded=exceeded) is expected


def test_summary_counts_by_phase_and_failed_events() -> None:
    status = apply_results(
        status_with(NI, INJ, "Injected/Wait", NI),
        batch(result("ns/p0", ok=False), result("ns/p3", ok=False), result("ns/p3")),
        now=NOW,
    )
    assert summary(status) == {"total": 4, "injected": 2, "notInjected": 1, "failedEvents": 2}


def test_summary_of_no_records() -> None:
    assert summary(no_records()) == {"total": 0, "injected": 0, "notInjected": 0, "failedEvents": 0}


# --- wire shape ------------------------------------------------------------------------------


def test_status_encodes_in_chaos_mesh_shape() -> None:
    status = apply_decision(None, decision(records=["ns/a"]))
    status = with_conditions(apply_results(status, batch(result("ns/a")), now=NOW), paused=False)
    assert msgspec.json.decode(msgspec.json.encode(status)) == {
        "conditions": [
            {"type": "Selected", "status": "True"},
            {"type": "AllInjected", "status": "True"},
            {"type": "AllRecovered", "status": "False"},
            {"type": "Paused", "status": "False"},
        ],
        "experiment": {
            "desiredPhase": "Run",
            "containerRecords": [
                {
                    "id": "ns/a",
                    "selectorKey": ".",
                    "phase": "Injected",
                    "injectedCount": 1,
                    "recoveredCount": 0,
                    "events": [{"type": "Succeeded", "operation": "Apply", "timestamp": NOW}],
                }
            ],
        },
    }
