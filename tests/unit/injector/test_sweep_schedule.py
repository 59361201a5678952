"""When the periodic sweep runs: the first time at an offset drawn within the interval (injectors
started together must not sweep at the same moments for ever after), then every interval."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chaosbus.injector import loops


class _Stop(Exception):
    pass


class _Counting:
    def __init__(self) -> None:
        self.sweeps = self.chores = 0

    async def sweep(self) -> None:
        self.sweeps += 1

    async def housekeeping(self) -> None:
        self.chores += 1


def waits(monkeypatch: pytest.MonkeyPatch, rounds: int, **kwargs: Any) -> tuple[list[float], _Counting]:
    """The delays `sweep_forever` sleeps before each of its first `rounds` sweeps."""
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        if len(slept) == rounds:
            raise _Stop
        slept.append(delay)

    monkeypatch.setattr(loops.asyncio, "sleep", sleep)
    both = _Counting()
    with pytest.raises(_Stop):
        asyncio.run(loops.sweep_forever(both, both, 30.0, **kwargs))  # type: ignore[arg-type]
    return slept, both


def test_the_first_sweep_comes_at_the_drawn_offset_then_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[tuple[float, float]] = []

    def first(low: float, high: float) -> float:
        drawn.append((low, high))
        return 7.5

    slept, both = waits(monkeypatch, 3, first=first)
    assert drawn == [(0.0, 30.0)] and slept == [7.5, 30.0, 30.0]
    assert both.sweeps == 3 and both.chores == 3


def test_injectors_started_together_draw_different_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    offsets = {waits(monkeypatch, 1)[0][0] for _ in range(20)}
    assert all(0.0 <= o <= 30.0 for o in offsets) and len(offsets) > 10
