"""Recorder core: decisions and results folded into a stored object's status, and when the
`chaos-mesh/records` finalizer is added or removed. Objects are plain Kubernetes-shaped dicts.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import msgspec
import pytest

from chaosbus.common import messages as m
from chaosbus.common.crd.meta import CLEAN_FINALIZER_ANNOTATION, PAUSE_ANNOTATION, RECORDS_FINALIZER
from chaosbus.recorder import core

UID = "u1"
NOW = "2026-01-02T03:04:05Z"
DELETED_AT = "2026-01-02T03:05:00Z"


def obj(
    *,
    finalizers: list[str] | None = None,
    deleting: bool = False,
    annotations: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
    uid: str = UID,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x", "namespace": "ns", "uid": uid}
    if finalizers is not None:
        meta["finalizers"] = finalizers
    if deleting:
        meta["deletionTimestamp"] = DELETED_AT
    if annotations:
        meta["annotations"] = annotations
    out: dict[str, Any] = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "PodChaos",
        "metadata": meta,
        "spec": {"action": "pod-failure", "mode": "all", "selector": {}},
    }
    if status is not None:
        out["status"] = status
    return out


def decision(
    records: list[str] | None = None,
    *,
    phase: Literal["Run", "Stop"] = "Run",
    uid: str = UID,
    selection_error: str = "",
    deleting: bool = False,
    key: str = ".",
) -> m.ExperimentDecision:
    refs = None if records is None else [m.RecordRef(id=r, selector_key=key) for r in records]
    return m.ExperimentDecision(
        experiment_uid=uid,
        generation=1,
        kind="PodChaos",
        namespace="ns",
        name="x",
        desired_phase=phase,
        records=refs,
        selection_error=selection_error,
        deleting=deleting,
    )


def batch(*results: tuple[str, str, bool], uid: str = UID, message: str = "") -> m.ResultBatch:
    return m.ResultBatch(
        command_id="c1",
        experiment_uid=uid,
        generation=1,
        kind="PodChaos",
        namespace="ns",
        name="x",
        node="n1",
        results=[
            m.TargetResult(target_id=t, op=op, ok=ok, message=message)  # type: ignore[arg-type]
            for t, op, ok in results
        ],
    )


def conditions(o: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in o["status"]["conditions"]}


def records(o: dict[str, Any]) -> list[dict[str, Any]]:
    recs: list[dict[str, Any]] = o["status"]["experiment"]["containerRecords"]
    return recs


def decided(*ids: str, **kw: Any) -> dict[str, Any]:
    out = core.on_decision(obj(finalizers=[RECORDS_FINALIZER], **kw), decision(list(ids)))
    assert out is not None
    return out


def status_with(*phases: tuple[str, str]) -> dict[str, Any]:
    return {
        "conditions": [],
        "experiment": {
            "desiredPhase": "Stop",
            "containerRecords": [
                {"id": rid, "selectorKey": ".", "phase": ph, "injectedCount": 1, "recoveredCount": 0, "events": []}
                for rid, ph in phases
            ],
        },
    }


# --- decisions -----------------------------------------------------------------------------------


def test_decision_creates_not_injected_records() -> None:
    o = decided("ns/a", "ns/b")
    assert [
        (r["id"], r["selectorKey"], r["phase"], r["injectedCount"], r["recoveredCount"], r["events"])
        for r in records(o)
    ] == [("ns/a", ".", "Not Injected", 0, 0, []), ("ns/b", ".", "Not Injected", 0, 0, [])]
    assert o["status"]["experiment"]["desiredPhase"] == "Run"


def test_decision_writes_all_four_conditions_in_order() -> None:
    o = decided("ns/a")
    assert [(c["type"], c["status"]) for c in o["status"]["conditions"]] == [
        ("Selected", "True"),
        ("AllInjected", "False"),
        ("AllRecovered", "True"),
        ("Paused", "False"),
    ]


def test_paused_object_gets_paused_condition() -> None:
    assert conditions(decided("ns/a", annotations={PAUSE_ANNOTATION: "true"}))["Paused"] == "True"


def test_decision_for_another_uid_is_ignored() -> None:
    assert core.on_decision(obj(), decision(["ns/a"], uid="other")) is None


def test_same_decision_twice_is_unchanged() -> None:
    o = decided("ns/a")
    assert core.on_decision(o, decision(["ns/a"])) is None


def test_decision_does_not_mutate_the_input() -> None:
    o = obj()
    before = copy.deepcopy(o)
    core.on_decision(o, decision(["ns/a"]))
    assert o == before


def test_later_decision_changes_phase_but_keeps_records() -> None:
    o = decided("ns/a")
    out = core.on_decision(o, decision(["ns/b"], phase="Stop"))
    assert out is not None
    assert out["status"]["experiment"]["desiredPhase"] == "Stop"
    assert [r["id"] for r in records(out)] == ["ns/a"]


def test_selection_error_lands_in_the_selected_condition() -> None:
    out = core.on_decision(obj(), decision(None, selection_error="spec.selector: no pod is selected"))
    assert out is not None
    selected = out["status"]["conditions"][0]
    assert selected == {
        "type": "Selected",
        "status": "False",
        "reason": "SelectionFailed",
        "message": "spec.selector: no pod is selected",
    }
    assert out["status"]["experiment"].get("containerRecords") is None


def test_other_conditions_carry_no_selection_message() -> None:
    out = core.on_decision(obj(), decision(None, selection_error="boom"))
    assert out is not None
    assert all("message" not in c for c in out["status"]["conditions"][1:])


def test_successful_selection_clears_the_selection_message() -> None:
    failed = core.on_decision(obj(), decision(None, selection_error="boom"))
    assert failed is not None
    out = core.on_decision(failed, decision(["ns/a"]))
    assert out is not None
    assert out["status"]["conditions"][0] == {"type": "Selected", "status": "True"}


def test_unreadable_status_is_rebuilt_from_the_decision() -> None:
    out = core.on_decision(obj(status={"experiment": {"containerRecords": "garbage"}}), decision(["ns/a"]))
    assert out is not None and [r["id"] for r in records(out)] == ["ns/a"]


# --- results -------------------------------------------------------------------------------------


def test_successful_apply_marks_injected_with_count_and_event() -> None:
    out = core.on_results(
        decided("ns/a", "ns/b"), batch(("ns/a", "apply", True), message="killed"), now=NOW, max_events=10
    )
    assert out is not None
    a, b = records(out)
    assert (a["phase"], a["injectedCount"], a["events"]) == (
        "Injected",
        1,
        [{"type": "Succeeded", "operation": "Apply", "timestamp": NOW, "message": "killed"}],
    )
    assert (b["phase"], b["injectedCount"], b["events"]) == ("Not Injected", 0, [])


def test_all_applied_sets_all_injected() -> None:
    out = core.on_results(decided("ns/a"), batch(("ns/a", "apply", True)), now=NOW, max_events=10)
    assert out is not None
    assert conditions(out) == {"Selected": "True", "AllInjected": "True", "AllRecovered": "False", "Paused": "False"}


def test_successful_recover_counts_and_marks_not_injected() -> None:
    injected = core.on_results(decided("ns/a"), batch(("ns/a", "apply", True)), now=NOW, max_events=10)
    assert injected is not None
    out = core.on_results(injected, batch(("ns/a", "recover", True)), now=NOW, max_events=10)
    assert out is not None
    [a] = records(out)
    assert (a["phase"], a["injectedCount"], a["recoveredCount"]) == ("Not Injected", 1, 1)
    assert [e["operation"] for e in a["events"]] == ["Apply", "Recover"]


def test_failure_adds_a_failed_event_and_keeps_the_phase() -> None:
    out = core.on_results(decided("ns/a"), batch(("ns/a", "apply", False), message="no netns"), now=NOW, max_events=10)
    assert out is not None
    [a] = records(out)
    assert (a["phase"], a["injectedCount"]) == ("Not Injected", 0)
    assert a["events"] == [{"type": "Failed", "operation": "Apply", "timestamp": NOW, "message": "no netns"}]


def test_events_are_capped_oldest_first() -> None:
    o = decided("ns/a")
    for i in range(5):
        out = core.on_results(o, batch(("ns/a", "apply", False), message=f"try {i}"), now=NOW, max_events=3)
        assert out is not None
        o = out
    assert [e["message"] for e in records(o)[0]["events"]] == ["try 2", "try 3", "try 4"]


def test_results_for_another_uid_are_ignored() -> None:
    assert core.on_results(decided("ns/a"), batch(("ns/a", "apply", True), uid="other"), now=NOW, max_events=10) is None


def test_results_before_their_decision_are_retried_not_dropped() -> None:
    with pytest.raises(core.RecordsNotYetKnown):
        core.on_results(obj(), batch(("ns/a", "apply", True)), now=NOW, max_events=10)


def test_results_before_the_stored_decision_apply_the_known_decision_first() -> None:
    out = core.on_results(
        obj(), batch(("ns/a", "apply", True)), now=NOW, max_events=10, decision=decision(["ns/a", "ns/b"])
    )
    assert out is not None
    assert [(r["id"], r["phase"], r["injectedCount"]) for r in records(out)] == [
        ("ns/a", "Injected", 1),
        ("ns/b", "Not Injected", 0),
    ]


def test_results_for_unknown_records_are_retried_not_silently_dropped() -> None:
    with pytest.raises(core.RecordsNotYetKnown):
        core.on_results(decided("ns/a"), batch(("ns/zzz", "apply", True)), now=NOW, max_events=10)


def test_several_batches_fold_into_one_write_as_if_applied_one_by_one() -> None:
    two = [batch(("ns/a", "apply", True), message="node 1"), batch(("ns/b", "apply", True), ("ns/a", "recover", True))]
    together = core.on_results_many(decided("ns/a", "ns/b"), two, now=NOW, max_events=10)
    one_by_one: dict[str, Any] | None = decided("ns/a", "ns/b")
    for b in two:
        assert one_by_one is not None
        one_by_one = core.on_results(one_by_one, b, now=NOW, max_events=10)
    assert together is not None and together == one_by_one
    assert [(r["id"], r["phase"]) for r in records(together)] == [("ns/a", "Not Injected"), ("ns/b", "Injected")]


def test_one_batch_without_records_holds_back_its_whole_group() -> None:
    with pytest.raises(core.RecordsNotYetKnown):
        core.on_results_many(
            decided("ns/a"), [batch(("ns/a", "apply", True)), batch(("ns/zzz", "apply", True))], now=NOW, max_events=10
        )


# --- finalizer -----------------------------------------------------------------------------------


@pytest.mark.parametrize("existing", [None, [], ["other/finalizer"]])
def test_finalizer_added_when_missing(existing: list[str] | None) -> None:
    out = core.finalizer_change(obj(finalizers=existing), None)
    assert out is not None
    assert out["metadata"]["finalizers"] == [*(existing or []), RECORDS_FINALIZER]


def test_finalizer_present_is_left_alone() -> None:
    assert core.finalizer_change(obj(finalizers=[RECORDS_FINALIZER]), None) is None


def test_finalizer_is_not_added_to_a_deleting_object() -> None:
    assert core.finalizer_change(obj(finalizers=["other"], deleting=True), None) is None


def test_finalizer_change_does_not_mutate_the_input() -> None:
    o = obj(finalizers=["other"])
    before = copy.deepcopy(o)
    core.finalizer_change(o, None)
    assert o == before


@pytest.mark.parametrize(
    "phases",
    [
        [("ns/a", "Injected")],
        [("ns/a", "Not Injected"), ("ns/b", "Injected")],
        [("ns/a", "Injected/Wait")],
        [("ns/a", "Not Injected/Wait")],
    ],
)
def test_finalizer_kept_while_anything_is_injected_during_deletion(phases: list[tuple[str, str]]) -> None:
    o = obj(finalizers=[RECORDS_FINALIZER], deleting=True, status=status_with(*phases))
    assert core.finalizer_change(o, decision(phase="Stop", deleting=True)) is None


def test_finalizer_removed_when_deleting_confirmed_and_all_recovered() -> None:
    o = obj(
        finalizers=["other", RECORDS_FINALIZER],
        deleting=True,
        status=status_with(("ns/a", "Not Injected"), ("ns/b", "Not Injected")),
    )
    out = core.finalizer_change(o, decision(phase="Stop", deleting=True))
    assert out is not None and out["metadata"]["finalizers"] == ["other"]


def test_finalizer_removed_when_deleting_confirmed_and_no_status() -> None:
    o = obj(finalizers=[RECORDS_FINALIZER], deleting=True)
    out = core.finalizer_change(o, decision(phase="Stop", deleting=True))
    assert out is not None and out["metadata"]["finalizers"] == []


@pytest.mark.parametrize(
    "latest",
    [
        None,
        decision(phase="Stop", deleting=False),
        decision(phase="Stop", deleting=True, uid="other"),
    ],
    ids=["no-decision", "not-deleting", "other-uid"],
)
def test_finalizer_kept_until_the_scheduler_confirms_deletion(latest: m.ExperimentDecision | None) -> None:
    o = obj(finalizers=[RECORDS_FINALIZER], deleting=True, status=status_with(("ns/a", "Not Injected")))
    assert core.finalizer_change(o, latest) is None


@pytest.mark.parametrize("latest", [None, decision(phase="Stop", deleting=True)])
def test_forced_clean_removes_the_finalizer_at_once(latest: m.ExperimentDecision | None) -> None:
    o = obj(
        finalizers=[RECORDS_FINALIZER],
        deleting=True,
        annotations={CLEAN_FINALIZER_ANNOTATION: "forced"},
        status=status_with(("ns/a", "Injected")),
    )
    out = core.finalizer_change(o, latest)
    assert out is not None and out["metadata"]["finalizers"] == []


@pytest.mark.parametrize("value", ["true", "Forced", ""])
def test_only_literal_forced_cleans(value: str) -> None:
    o = obj(
        finalizers=[RECORDS_FINALIZER],
        deleting=True,
        annotations={CLEAN_FINALIZER_ANNOTATION: value},
        status=status_with(("ns/a", "Injected")),
    )
    assert core.finalizer_change(o, None) is None


def test_deleting_without_our_finalizer_is_left_alone() -> None:
    assert (
        core.finalizer_change(obj(finalizers=["other"], deleting=True), decision(phase="Stop", deleting=True)) is None
    )


@pytest.mark.parametrize(
    ("meta", "settled"),
    [
        ({"finalizers": [RECORDS_FINALIZER]}, True),  # live, ours in place: a status write's echo
        ({"finalizers": ["other"], "deletionTimestamp": "2026-11-22T00:00:00Z"}, True),  # released already
        ({}, False),  # live without ours: add it
        ({"finalizers": [RECORDS_FINALIZER], "deletionTimestamp": "2026-11-22T00:00:00Z"}, False),  # maybe release
    ],
)
def test_the_metadata_alone_tells_when_the_finalizer_needs_no_look(meta: dict[str, Any], settled: bool) -> None:
    assert core.finalizer_settled(meta) is settled
    obj = {"metadata": {"uid": "u", **meta}}
    if settled:  # never a change where the shortcut skips one
        assert core.finalizer_change(obj, None) is None


def test_a_scheduler_failure_makes_the_experiment_failed_with_the_reason_until_it_runs_again() -> None:
    failed = msgspec.structs.replace(decision(["ns/a"]), failure="invalid object: spec.duration: too long")
    o = core.on_decision(obj(finalizers=[RECORDS_FINALIZER]), failed)
    assert o is not None and o["status"]["phase"] == "Failed"
    [cond] = [c for c in o["status"]["conditions"] if c["type"] == "AllInjected"]
    assert (cond["reason"], cond["message"]) == ("Failed", "invalid object: spec.duration: too long")
    later = core.on_results(o, batch(("ns/a", "apply", True)), now=NOW, max_events=10)
    assert later is not None and later["status"]["phase"] == "Failed"  # results do not hide it
    cleared = core.on_decision(later, decision(["ns/a"]))
    assert cleared is not None and cleared["status"]["phase"] == "Running"
    assert all(c.get("reason", "") != "Failed" for c in cleared["status"]["conditions"])


def _batch(node: str, *targets: str, uid: str = "u1") -> m.ResultBatch:
    return m.ResultBatch(
        command_id="c",
        experiment_uid=uid,
        generation=1,
        kind="NetworkChaos",
        namespace="d",
        name="x",
        node=node,
        results=[m.TargetResult(target_id=t, op="apply", ok=True) for t in targets],
    )


@pytest.mark.parametrize(
    ("subject", "node", "uid", "refused"),
    [
        ("chaos.result.n1.u1", "n1", "u1", False),
        ("chaos.result.n1.u1", "n2", "u1", True),  # claims another node than the one nats-server vouched for
        ("chaos.result.n1.u2", "n1", "u1", True),  # another experiment's subject
        ("chaos.result.u1", "n1", "u1", True),  # not a per-node subject at all
        ("chaos.result.node_a.u1", "node.a", "u1", False),  # node names with dots are one token
    ],
)
def test_a_result_must_claim_the_node_and_experiment_of_its_subject(
    subject: str, node: str, uid: str, refused: bool
) -> None:
    assert (core.subject_mismatch(_batch(node, "t", uid=uid), subject) is not None) is refused


def test_results_about_another_node_s_targets_are_split_off() -> None:
    decision = m.ExperimentDecision(
        experiment_uid="u1",
        generation=1,
        kind="NetworkChaos",
        namespace="d",
        name="x",
        desired_phase="Run",
        records=[m.RecordRef(id="a", node="n1"), m.RecordRef(id="b", node="n2"), m.RecordRef(id="c")],
    )
    kept, refused = core.foreign_results(_batch("n1", "a", "b", "c"), decision)
    assert [r.target_id for r in kept.results] == ["a", "c"] and [r.target_id for r in refused] == ["b"]
    unknown, none = core.foreign_results(_batch("n1", "b"), None)  # no decision known: nothing to judge by
    assert [r.target_id for r in unknown.results] == ["b"] and none == []
