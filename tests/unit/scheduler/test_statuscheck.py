"""StatusCheck's pure core with an injected clock: probe timing, thresholds per mode, duration,
history limit, Chaos Mesh's status shape, and resuming from a stored status after a restart.
"""

from __future__ import annotations

from typing import Any

import pytest

from chaosbus.common.crd.orchestration import StatusCheckSpec
from chaosbus.scheduler import statuscheck as sc

T0 = 1767323045.0  # 2026-01-02T03:04:05Z


def spec(**kw: Any) -> StatusCheckSpec:
    raw: dict[str, Any] = {
        "mode": "Synchronous",
        "type": "HTTP",
        "intervalSeconds": 2,
        "failureThreshold": 3,
        "successThreshold": 2,
        "http": {"url": "http://127.0.0.1:1/", "criteria": {"statusCode": "200-299"}},
    }
    raw.update(kw)
    return sc.decode_spec(raw)


def conditions(state: sc.CheckState) -> dict[str, str]:
    return {c["type"]: c["status"] for c in sc.status_of(state)["conditions"]}


def test_probes_are_due_at_start_then_every_interval_until_completed() -> None:
    state = sc.CheckState(spec=spec(), start=T0)
    assert sc.next_probe(state) == T0
    sc.fold(state, T0, ok=True, now=T0 + 0.1)
    assert sc.next_probe(state) == T0 + 2
    sc.fold(state, T0 + 2, ok=True, now=T0 + 2.1)
    assert sc.next_probe(state) is None and state.completed


def test_synchronous_completes_on_consecutive_successes_only() -> None:
    state = sc.CheckState(spec=spec(), start=T0)
    for i, ok in enumerate([True, False, True]):
        sc.fold(state, T0 + 2 * i, ok=ok, now=T0 + 2 * i)
    assert not state.completed
    sc.fold(state, T0 + 6, ok=True, now=T0 + 6)
    assert conditions(state) == {
        "Completed": "True",
        "SuccessThresholdExceed": "True",
        "FailureThresholdExceed": "False",
        "DurationExceed": "False",
    }
    assert sc.succeeded(sc.status_of(state)) is True


def test_continuous_ignores_successes_and_fails_on_the_failure_threshold() -> None:
    state = sc.CheckState(spec=spec(mode="Continuous"), start=T0)
    for i in range(5):
        sc.fold(state, T0 + i, ok=True, now=T0 + i)
    assert not state.completed
    for i in range(5, 8):
        sc.fold(state, T0 + i, ok=False, now=T0 + i)
    assert conditions(state)["FailureThresholdExceed"] == "True" and state.completed
    assert sc.succeeded(sc.status_of(state)) is False
    sc.fold(state, T0 + 9, ok=True, now=T0 + 9)  # a late probe after completion changes nothing
    assert state.count == 8


def test_duration_completes_the_check_and_continuous_passes_when_its_newest_probes_succeeded() -> None:
    state = sc.CheckState(spec=spec(mode="Continuous", duration="5s"), start=T0)
    assert sc.next_wakeup(state) == T0
    sc.fold(state, T0, ok=True, now=T0)
    sc.fold(state, T0 + 2, ok=True, now=T0 + 2)  # successThreshold=2 reached: healthy at the end
    assert not sc.tick(state, T0 + 4.9)
    assert sc.tick(state, T0 + 5)
    assert conditions(state)["DurationExceed"] == "True" and conditions(state)["Completed"] == "True"
    assert sc.succeeded(sc.status_of(state)) is True
    assert sc.status_of(state)["completionTime"] == "2026-01-02T03:04:10Z"


def test_history_is_capped_but_thresholds_still_judged_on_enough_records() -> None:
    state = sc.CheckState(spec=spec(mode="Continuous", recordsHistoryLimit=1, failureThreshold=3), start=T0)
    for i in range(3):
        sc.fold(state, T0 + i, ok=False, now=T0 + i)
    status = sc.status_of(state)
    assert len(status["records"]) == 1 and status["count"] == 3
    assert conditions(state)["FailureThresholdExceed"] == "True"


def test_status_has_chaos_mesh_shape_and_resumes_after_restart() -> None:
    state = sc.CheckState(spec=spec(successThreshold=3), start=T0)
    sc.fold(state, T0, ok=True, now=T0 + 0.5)
    sc.fold(state, T0 + 2, ok=True, now=T0 + 2.5)
    status = sc.status_of(state)
    assert status["startTime"] == "2026-01-02T03:04:05Z" and status["count"] == 2
    assert status["records"] == [
        {"startTime": "2026-01-02T03:04:05Z", "outcome": "Success"},
        {"startTime": "2026-01-02T03:04:07Z", "outcome": "Success"},
    ]
    assert {c["type"] for c in status["conditions"]} == set(sc.CONDITION_TYPES)
    assert all("lastProbeTime" in c and "lastTransitionTime" in c for c in status["conditions"])
    resumed = sc.from_status(spec(successThreshold=3), T0 - 100, status)
    assert resumed.start == T0 and resumed.count == 2 and sc.next_probe(resumed) == T0 + 4
    sc.fold(resumed, T0 + 4, ok=True, now=T0 + 4)
    assert resumed.completed and conditions(resumed)["SuccessThresholdExceed"] == "True"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"mode": "Sometimes"}, "spec.mode"),
        ({"type": "TCP"}, "spec.type"),
        ({"http": {"url": "ftp://x"}}, "spec.http.url"),
        ({"http": {"url": "http://x", "method": "PUT"}}, "spec.http.method"),
        ({"http": {"url": "http://x", "criteria": {"statusCode": "2xx"}}}, "spec.http.criteria.statusCode"),
        ({"intervalSeconds": 0}, "spec.intervalSeconds"),
        ({"recordsHistoryLimit": 1001}, "spec.recordsHistoryLimit"),
        ({"duration": "soon"}, "spec.duration"),
    ],
)
def test_invalid_specs_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(sc.InvalidCheck, match=field.replace(".", r"\.")):
        sc.validate(spec(**change))


def test_status_code_criteria_single_and_range() -> None:
    assert sc.status_code_range("200") == (200, 200)
    assert sc.status_code_range("200-299") == (200, 299)


@pytest.mark.parametrize(
    ("mode", "outcomes", "duration", "reason"),
    [
        ("Synchronous", [True, True], None, "StatusCheckSuccessThresholdExceed"),
        ("Continuous", [False, False, False], None, "StatusCheckFailureThresholdExceed"),
        ("Continuous", [True], "3s", "StatusCheckDurationExceed"),
    ],
)
def test_conditions_carry_chaos_mesh_reasons(
    mode: str, outcomes: list[bool], duration: str | None, reason: str
) -> None:
    """Chaos Mesh always writes `reason` (its field has no omitempty): "" on every condition but
    Completed, whose reason names what completed the check.
    """
    state = sc.CheckState(spec=spec(mode=mode, **({"duration": duration} if duration else {})), start=T0)
    running = sc.status_of(state)["conditions"]
    assert [c["reason"] for c in running] == ["", "", "", ""]
    for i, ok in enumerate(outcomes):
        sc.fold(state, T0 + i, ok=ok, now=T0 + i)
    sc.tick(state, T0 + 10)
    reasons = {c["type"]: c["reason"] for c in sc.status_of(state)["conditions"]}
    assert reasons == {
        "Completed": reason,
        "DurationExceed": "",
        "FailureThresholdExceed": "",
        "SuccessThresholdExceed": "",
    }
    resumed = sc.from_status(state.spec, T0, sc.status_of(state))  # a restarted scheduler writes the same
    assert sc.status_of(resumed)["conditions"] == sc.status_of(state)["conditions"]


def test_status_codes_accepted_as_chaos_mesh_accepts_them() -> None:
    """Chaos Mesh's webhook takes any code in 1..999 (e.g. a 600-699 range for a custom server)."""
    assert sc.status_code_range("600-699") == (600, 699)
    assert sc.status_code_range("1") == (1, 1)
    for bad in ("0", "1000", "300-200", "200-"):
        with pytest.raises(sc.InvalidCheck, match=r"spec\.http\.criteria\.statusCode"):
            sc.status_code_range(bad)


def test_continuous_success_threshold_follows_the_newest_probes_and_decides_at_completion() -> None:
    """Chaos Mesh computes SuccessThresholdExceed in both modes from the newest records: in
    Continuous mode it comes and goes while the check runs (it does not complete it), and a check
    that ends by its duration passes only if it is True then (abortWithStatusCheck aborts otherwise).
    """
    state = sc.CheckState(spec=spec(mode="Continuous", duration="10s", successThreshold=2), start=T0)
    sc.fold(state, T0, ok=True, now=T0)
    assert conditions(state)["SuccessThresholdExceed"] == "False"
    sc.fold(state, T0 + 2, ok=True, now=T0 + 2)
    assert conditions(state)["SuccessThresholdExceed"] == "True" and not state.completed
    sc.fold(state, T0 + 4, ok=False, now=T0 + 4)  # one failure, below failureThreshold=3
    assert conditions(state)["SuccessThresholdExceed"] == "False"
    sc.tick(state, T0 + 10)
    assert sc.succeeded(sc.status_of(state)) is False  # unhealthy at the end: the workflow aborts
    assert [e[1] for e in sc.completion_events(state)] == ["StatusCheckCompleted", "StatusCheckDurationExceed"]

    healthy = sc.CheckState(spec=spec(mode="Continuous", duration="10s", successThreshold=2), start=T0)
    for i, ok in enumerate([False, False, True, True]):
        sc.fold(healthy, T0 + 2 * i, ok=ok, now=T0 + 2 * i)
    sc.tick(healthy, T0 + 10)
    assert sc.succeeded(sc.status_of(healthy)) is True
    assert sc.status_of(healthy)["conditions"][0]["reason"] == "StatusCheckDurationExceed"


def test_a_probe_landing_after_the_duration_completes_by_duration_first() -> None:
    state = sc.CheckState(spec=spec(mode="Continuous", duration="5s", failureThreshold=1), start=T0)
    sc.fold(state, T0 + 4, ok=False, now=T0 + 6)  # started in time, answered after the end
    conds = conditions(state)
    assert conds["DurationExceed"] == "True" and conds["FailureThresholdExceed"] == "True"
    assert sc.status_of(state)["conditions"][0]["reason"] == "StatusCheckDurationExceed"
