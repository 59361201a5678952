"""status.phase / injected / total: the experiment phase the recorder derives from records,
desiredPhase and the object (pause, deletion, one-shot action), for `kubectl get` columns. Chaos
Mesh's status fields stay exactly as they were; the summary fields only add to them.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from unit.recorder.test_core import batch, decision, obj

from chaosbus.common.crd.meta import PAUSE_ANNOTATION
from chaosbus.common.crd.status import PHASES, ChaosStatus, ExperimentStatus, Record, RecordEvent
from chaosbus.recorder import core
from chaosbus.recorder.status import phase, with_summary

NOW = "2026-01-02T03:04:05Z"
NI, INJ = "Not Injected", "Injected"


def rec(record_phase: str, *, last: str = "") -> Record:
    events = [RecordEvent(type=last, operation="Apply", timestamp=NOW, message="boom")] if last else []
    return Record(id="ns/p", selector_key=".", phase=record_phase, events=events)


def status(*records: Record, desired: str = "Run", selected: bool = True) -> ChaosStatus:
    return ChaosStatus(
        experiment=ExperimentStatus(desired_phase=desired, container_records=list(records) if selected else None)
    )


def ph(
    s: ChaosStatus,
    *,
    paused: bool = False,
    deleting: bool = False,
    one_shot: bool = False,
    selection_failed: bool = False,
) -> str:
    return phase(s, paused=paused, deleting=deleting, one_shot=one_shot, selection_failed=selection_failed)


# --- the pure rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "kw", "expected"),
    [
        (status(rec(INJ)), {"deleting": True, "paused": True}, "Deleting"),
        (status(rec(INJ)), {"paused": True}, "Paused"),
        (status(selected=False), {}, "Injecting"),
        (status(selected=False), {"selection_failed": True}, "Failed"),
        (status(rec(NI), rec(INJ)), {}, "Injecting"),
        (status(rec(INJ), rec(INJ)), {}, "Running"),
        (status(rec(INJ), rec(NI, last="Failed")), {}, "Failed"),
        (status(rec(INJ), rec(NI, last="Succeeded")), {}, "Injecting"),
        (status(rec(INJ), rec(NI), desired="Stop"), {}, "Recovering"),
        (status(rec(INJ, last="Failed"), desired="Stop"), {}, "Failed"),
        (status(rec(NI), rec(NI), desired="Stop"), {}, "Finished"),
        (status(rec(INJ), rec(INJ)), {"one_shot": True}, "Finished"),
        (status(rec(INJ), rec(INJ)), {"one_shot": True, "paused": True}, "Finished"),
    ],
    ids=[
        "deletion-wins",
        "paused",
        "not-selected-yet",
        "selection-failed",
        "injecting",
        "running",
        "apply-failed",
        "older-failure-then-success",
        "recovering",
        "recover-failed",
        "duration-over",
        "one-shot-done",
        "one-shot-ignores-pause",
    ],
)
def test_phase(s: ChaosStatus, kw: dict[str, bool], expected: str) -> None:
    assert ph(s, **kw) == expected
    assert expected in PHASES


def test_an_injected_target_whose_latest_event_failed_does_not_fail_the_experiment() -> None:
    # e.g. a duplicate apply that failed after the first one succeeded: the target is still injected
    assert ph(status(rec(INJ, last="Failed"), rec(INJ))) == "Running"


def test_summary_adds_phase_and_counts_and_keeps_chaos_mesh_fields() -> None:
    before = status(rec(INJ), rec(NI), rec(INJ))
    after = with_summary(before, paused=False, deleting=False, one_shot=False)
    encoded = msgspec.to_builtins(after)
    assert (encoded["phase"], encoded["injected"], encoded["total"]) == ("Injecting", 2, 3)
    assert {k: v for k, v in encoded.items() if k not in ("phase", "injected", "total")} == msgspec.to_builtins(before)


def test_status_without_summary_encodes_exactly_as_chaos_mesh() -> None:
    assert set(msgspec.to_builtins(status(rec(INJ)))) == {"conditions", "experiment"}


# --- through the recorder core (what it writes on the object) --------------------------------------


def summary_of(o: dict[str, Any] | None) -> tuple[str, int, int]:
    assert o is not None
    return o["status"]["phase"], o["status"]["injected"], o["status"]["total"]


def test_written_status_carries_phase_and_counts_as_results_arrive() -> None:
    o = core.on_decision(obj(), decision(["ns/a", "ns/b"]))
    assert summary_of(o) == ("Injecting", 0, 2)
    assert o is not None
    o = core.on_results(o, batch(("ns/a", "apply", True)), now=NOW, max_events=10)
    assert summary_of(o) == ("Injecting", 1, 2)
    assert o is not None
    o = core.on_results(o, batch(("ns/b", "apply", True)), now=NOW, max_events=10)
    assert summary_of(o) == ("Running", 2, 2)


def test_a_failed_apply_shows_failed_until_a_retry_succeeds() -> None:
    o = core.on_decision(obj(), decision(["ns/a"]))
    assert o is not None
    failed = core.on_results(
        o, batch(("ns/a", "apply", False), message="kernel lacks sch_netem"), now=NOW, max_events=10
    )
    assert summary_of(failed) == ("Failed", 0, 1)
    assert failed is not None
    assert summary_of(core.on_results(failed, batch(("ns/a", "apply", True)), now=NOW, max_events=10)) == (
        "Running",
        1,
        1,
    )


def test_selection_error_is_failed_with_nothing_selected() -> None:
    assert summary_of(core.on_decision(obj(), decision(selection_error="spec.selector: no pod is selected"))) == (
        "Failed",
        0,
        0,
    )


def test_pod_kill_is_finished_once_every_pod_is_killed_even_while_paused() -> None:
    kill = obj(annotations={PAUSE_ANNOTATION: "true"})
    kill["spec"]["action"] = "pod-kill"
    o = core.on_decision(kill, decision(["ns/a"]))
    assert summary_of(o) == ("Injecting", 0, 1)
    assert o is not None
    assert summary_of(core.on_results(o, batch(("ns/a", "apply", True)), now=NOW, max_events=10)) == ("Finished", 1, 1)


def test_pod_failure_is_paused_by_the_annotation_and_deleting_once_deleted() -> None:
    assert (
        summary_of(core.on_decision(obj(annotations={PAUSE_ANNOTATION: "true"}), decision(["ns/a"], phase="Stop")))[0]
        == "Paused"
    )
    assert summary_of(core.on_decision(obj(deleting=True), decision(["ns/a"], phase="Stop", deleting=True)))[0] == (
        "Deleting"
    )


def test_stopped_after_its_duration_with_every_target_recovered_is_finished() -> None:
    o = core.on_decision(obj(), decision(["ns/a"]))
    assert o is not None
    o = core.on_results(o, batch(("ns/a", "apply", True)), now=NOW, max_events=10)
    assert o is not None
    o = core.on_decision(o, decision(["ns/a"], phase="Stop"))
    assert summary_of(o) == ("Recovering", 1, 1)
    assert o is not None
    assert summary_of(core.on_results(o, batch(("ns/a", "recover", True)), now=NOW, max_events=10)) == (
        "Finished",
        0,
        1,
    )
