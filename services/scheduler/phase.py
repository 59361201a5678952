"""Desired phase, exactly in Chaos Mesh's order of rules (deleted, one-shot, duration, pause)."""

from __future__ import annotations

from chaosbus.common.crd.status import RUN, STOP


def stop_time(created_at: float, duration_s: float | None) -> float | None:
    """When a duration-based experiment stops; duration counts from creation, as in Chaos Mesh."""
    return None if duration_s is None else created_at + duration_s


def desired_phase(
    *, deleting: bool, one_shot: bool, created_at: float, duration_s: float | None, paused: bool, now: float
) -> str:
    if deleting:
        return STOP
    if one_shot:
        return RUN
    end = stop_time(created_at, duration_s)
    if end is not None and now >= end:
        return STOP
    if paused:
        return STOP
    return RUN


def duration_exceeded(created_at: float, duration_s: float | None, now: float) -> bool:
    end = stop_time(created_at, duration_s)
    return end is not None and now >= end
