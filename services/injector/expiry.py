"""What the node must recover now, what an apply must refuse, and why: pure decisions over
journal entries. The watchdog and the start-up reconcile act on them; nothing here has effects.

Order of reasons (the first that holds wins): the kill switch, a vanished target, a passed
deadline, a failed apply to clean up, an expired control-plane lease.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from chaosbus.common import messages as m
from chaosbus.injector import control
from chaosbus.injector.journal import FAILED, Entry
from chaosbus.injector.lease import LeaseBook

DOWN = "the injector was down"


@dataclass(frozen=True)
class Due:
    """An open entry to recover now."""

    entry: Entry
    reason: str  # the status message: "recovered: ..."
    ended: bool  # never re-applied for this generation (kill switch, lease)
    report: bool  # tell the recorder unasked; a passed deadline is reported to the scheduler's recover


@dataclass(frozen=True)
class World:
    now: float  # wall clock: deadlines are wall-clock times from the scheduler
    mono: float  # monotonic clock: the lease
    halt: m.HaltState
    lease: LeaseBook
    connected: bool  # NATS reachable right now
    starting: bool = False  # the start-up reconcile: whatever expired did so while we were down


def due(entries: Iterable[Entry], world: World, vanished: dict[str, str] | None = None) -> list[Due]:
    """Open, lasting entries that must be recovered now, each with its reason."""
    gone = vanished or {}
    out = []
    for e in entries:
        if e.is_open and e.lasting:
            d = _why(e, world, gone.get(e.key))
            if d is not None:
                out.append(d)
    return out


def _why(e: Entry, w: World, gone: str | None) -> Due | None:
    if w.halt.halted:
        return Due(e, control.recovered_reason(w.halt), ended=True, report=True)
    if gone:
        return Due(e, f"recovered: target gone ({gone})", ended=False, report=True)
    if e.deadline is not None and w.now >= e.deadline:
        return Due(e, deadline_reason(w), ended=False, report=False)
    if e.state == FAILED:
        return Due(e, f"recovered after a failed apply ({e.reason})", ended=False, report=False)
    if e.deadline is None and w.lease.expired(e.experiment_uid, w.mono):
        return Due(e, lease_reason(w), ended=True, report=True)
    return None


def deadline_reason(w: World) -> str:
    if w.starting:
        return f"recovered: deadline passed while {DOWN}"
    if not w.connected:
        return "recovered: deadline passed while the control plane was unreachable (expired by the node)"
    return "recovered: deadline passed (expired by the node)"


def lease_reason(w: World) -> str:
    why = "NATS unreachable" if not w.connected else "the scheduler was silent"
    return f"recovered: control-plane lease expired ({why} for {w.lease.ttl_s:g}s)"


def next_due(entries: Iterable[Entry], world: World) -> float | None:
    """Seconds until the next deadline or lease expiry among open entries (None: nothing timed)."""
    waits: list[float] = []
    leased: set[str] = set()
    for e in entries:
        if not (e.is_open and e.lasting):
            continue
        if e.deadline is not None:
            waits.append(e.deadline - world.now)
        else:
            leased.add(e.experiment_uid)
    expiry = world.lease.next_expiry(leased)
    if expiry is not None:
        waits.append(expiry - world.mono)
    return max(0.0, min(waits)) if waits else None


def refuse_apply(cmd: m.NodeCommand, entry: Entry | None, halt: m.HaltState, now: float) -> str | None:
    """Why this apply must not touch anything (None: go ahead). Never retried by the scheduler."""
    if halt.halted:
        return control.refusal(halt)
    if cmd.deadline is not None and now >= cmd.deadline:
        return f"not applied: the experiment's deadline ({_iso(cmd.deadline)}) passed before this command arrived"
    if entry is None:
        return None
    if entry.generation > cmd.generation:
        return stale(cmd, entry)
    if entry.ended and entry.generation == cmd.generation:
        return (
            f"refused: this fault already ended ({entry.reason.removeprefix('recovered: ')}); "
            "delete and re-create the experiment to run it again"
        )
    return None


def stale(cmd: m.NodeCommand, entry: Entry) -> str:
    return (
        f"stale command ignored: generation {cmd.generation} is older than generation "
        f"{entry.generation} already on this node"
    )


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
