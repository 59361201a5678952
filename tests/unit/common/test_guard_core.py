"""The SLO guard's decision: halt after `failures` evaluations in a row not met, once per breach;
re-armed only when the objective is met again (a resume during a breach is not fought)."""

from __future__ import annotations

import pytest

from chaosbus.cli.guard import Guard


@pytest.mark.parametrize(
    ("failures", "outcomes", "halts"),
    [
        (2, [True, False, True, False, True], []),  # never two in a row
        (2, [False, False], [1]),
        (1, [False, False, False], [0]),  # once per breach, not on every evaluation
        (2, [False, False, False, True, False, False], [1, 5]),  # met again: re-armed
    ],
)
def test_halts_once_per_breach(failures: int, outcomes: list[bool], halts: list[int]) -> None:
    guard = Guard(failures)
    assert [i for i, ok in enumerate(outcomes) if guard.observe(ok)] == halts
