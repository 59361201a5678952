"""The timer tick reconciles only experiments whose timer is due (plus a full pass every
FULL_RECONCILE_S), so a burst of events does not cost a reconcile of every experiment per event;
deadlines are still met exactly.
"""

from __future__ import annotations

from unit.scheduler.test_core import T0, chaos, event, feed, make_core, ops, results

from chaosbus.scheduler import core as core_mod
from chaosbus.scheduler.core import Outputs, SchedulerCore
from chaosbus.scheduler.memory import Experiment


class CountingCore(SchedulerCore):
    def __init__(self) -> None:
        super().__init__()
        self.reconciled: list[str] = []

    def reconcile(self, exp: Experiment, now: float) -> Outputs:
        self.reconciled.append(exp.uid)
        return super().reconcile(exp, now)


def running(n: int, duration: str | None = None) -> tuple[CountingCore, float]:
    base = make_core()
    core = CountingCore()
    core.pods = base.pods
    now = T0
    for i in range(n):
        spec = {"action": "partition", "mode": "all", "selector": {"labelSelectors": {"app": "web"}}}
        if duration:
            spec["duration"] = duration
        out = core.on_object(event(chaos("NetworkChaos", spec=spec, uid=f"u{i}"), "ADDED"), now)
        feed(core, results(out.commands), now + 0.01)
    core.tick(now)  # the first tick is a full pass
    core.reconciled.clear()
    return core, now


def test_a_tick_with_nothing_due_reconciles_nothing() -> None:
    core, now = running(50)
    for step in range(1, 40):
        core.tick(now + step * 0.1)
    assert core.reconciled == []


def test_a_due_deadline_is_reconciled_alone_and_recovered_at_once() -> None:
    core, now = running(20)
    spec = {"action": "partition", "mode": "all", "duration": "2s", "selector": {"labelSelectors": {"app": "web"}}}
    out = core.on_object(event(chaos("NetworkChaos", spec=spec, uid="timed"), "ADDED"), now)
    feed(core, results(out.commands), now + 0.01)
    core.reconciled.clear()
    end = core_mod.ph.stop_time(core.experiments["timed"].created_at, 2.0)
    assert end is not None and core.next_wakeup(now + 0.5) == end
    out = core.tick(end)
    assert core.reconciled == ["timed"]
    assert {op for _, op, _ in ops(out)} == {"recover"}


def test_every_experiment_is_still_reconciled_every_full_period() -> None:
    core, now = running(10)
    core.tick(now + core_mod.FULL_RECONCILE_S + 0.01)
    assert sorted(core.reconciled) == sorted(f"u{i}" for i in range(10))
