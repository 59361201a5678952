"""Desired phase: Chaos Mesh's rules in order (deleted, one-shot, duration, paused, run)."""

from __future__ import annotations

import pytest

from chaosbus.scheduler.phase import desired_phase, duration_exceeded, stop_time

CREATED = 1000.0


def phase(
    *,
    deleting: bool = False,
    one_shot: bool = False,
    duration: float | None = None,
    paused: bool = False,
    now: float = CREATED,
) -> str:
    return desired_phase(
        deleting=deleting, one_shot=one_shot, created_at=CREATED, duration_s=duration, paused=paused, now=now
    )


def test_plain_experiment_runs() -> None:
    assert phase() == "Run"


@pytest.mark.parametrize("one_shot", [True, False])
@pytest.mark.parametrize("paused", [True, False])
@pytest.mark.parametrize("duration", [None, 10.0])
def test_deleted_always_stops(one_shot: bool, paused: bool, duration: float | None) -> None:
    assert phase(deleting=True, one_shot=one_shot, paused=paused, duration=duration, now=CREATED + 1) == "Stop"


@pytest.mark.parametrize(
    ("paused", "duration", "now"),
    [
        (True, None, CREATED),
        (False, 10.0, CREATED + 10),
        (False, 10.0, CREATED + 1e6),
        (True, 10.0, CREATED + 11),
    ],
)
def test_one_shot_ignores_pause_and_duration(paused: bool, duration: float | None, now: float) -> None:
    assert phase(one_shot=True, paused=paused, duration=duration, now=now) == "Run"


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (CREATED, "Run"),
        (CREATED + 9.999, "Run"),
        (CREATED + 10, "Stop"),
        (CREATED + 10.001, "Stop"),
        (CREATED + 86400, "Stop"),
    ],
)
def test_duration_counts_from_creation(now: float, expected: str) -> None:
    assert phase(duration=10.0, now=now) == expected


def test_zero_duration_stops_at_once() -> None:
    assert phase(duration=0.0, now=CREATED) == "Stop"


def test_no_duration_never_stops_by_time() -> None:
    assert phase(duration=None, now=CREATED + 10 * 365 * 86400) == "Run"


@pytest.mark.parametrize("duration", [None, 60.0])
def test_paused_stops(duration: float | None) -> None:
    assert phase(paused=True, duration=duration, now=CREATED + 1) == "Stop"


def test_paused_time_is_not_excluded_from_the_duration() -> None:
    """Unpausing after the duration has passed does not run again: the clock kept going."""
    assert phase(paused=False, duration=60.0, now=CREATED + 61) == "Stop"


@pytest.mark.parametrize(("duration", "expected"), [(None, None), (0.0, CREATED), (30.0, CREATED + 30)])
def test_stop_time(duration: float | None, expected: float | None) -> None:
    assert stop_time(CREATED, duration) == expected


@pytest.mark.parametrize(
    ("duration", "now", "expected"),
    [
        (None, CREATED + 1e9, False),
        (30.0, CREATED + 29.9, False),
        (30.0, CREATED + 30, True),
        (30.0, CREATED + 31, True),
    ],
)
def test_duration_exceeded(duration: float | None, now: float, expected: bool) -> None:
    assert duration_exceeded(CREATED, duration, now) is expected
