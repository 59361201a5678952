"""The scheduler's memory (KV `scheduler`): what is written and when (only on change, deleted with
the experiment), its wire encoding, and a restarted core that resumes from it: expired
experiments recovered at once, live ones kept without a second apply, deadlines unchanged.
"""

from __future__ import annotations

import msgspec
from unit.scheduler.test_core import T0, UID, WEB0, WEB1, chaos, event, feed, make_core, ops, results, started

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common.crd.status import INJECTED, NOT_INJECTED
from chaosbus.scheduler.core import INFLIGHT_TIMEOUT_S, SchedulerCore

TIMED = {"action": "pod-failure", "duration": "3s"}


def written(core: SchedulerCore) -> dict[str, m.ExperimentMemory | None]:
    return dict(core.take_changes())


def restarted(before: SchedulerCore, *pods: m.TargetPod) -> SchedulerCore:
    """A new core that loads what `before` wrote (through the wire encoding, as from KV)."""
    core = make_core(*pods)
    core.load([busmod.decode(busmod.encode(mem), m.ExperimentMemory) for mem in before._saved.values()])
    return core


def test_selection_and_inflight_ops_are_written_once() -> None:
    core, _ = started(chaos(spec=TIMED))
    [mem] = written(core).values()
    assert mem is not None and mem.experiment_uid == UID and mem.created_at == T0
    assert [(t.target_id, t.phase, t.inflight, t.pod.node) for t in mem.targets or []] == [
        ("default/web-0", NOT_INJECTED, "apply", "n1"),
        ("default/web-1", NOT_INJECTED, "apply", "n2"),
    ]
    assert written(core) == {}  # nothing changed since: nothing to write


def test_ticks_that_change_nothing_write_nothing() -> None:
    core, out = started(chaos(spec=TIMED))
    feed(core, results(out.commands), T0 + 0.1)
    written(core)
    for i in range(10):
        core.tick(T0 + 0.2 + i * 0.1)
    assert written(core) == {}


def test_results_update_the_memory() -> None:
    core, out = started(chaos(spec=TIMED))
    written(core)
    feed(core, results(out.commands), T0 + 0.1)
    [mem] = written(core).values()
    assert mem is not None and {(t.phase, t.inflight) for t in mem.targets or []} == {(INJECTED, None)}


def test_memory_is_deleted_with_the_experiment() -> None:
    core, out = started(chaos(spec=TIMED))
    feed(core, results(out.commands), T0 + 0.1)
    assert written(core)[UID] is not None
    out = core.on_object(event(chaos(spec=TIMED), "DELETED"), T0 + 1)
    feed(core, results(out.commands), T0 + 1.1)
    assert written(core) == {UID: None} and UID not in core.experiments


def test_expired_while_down_is_recovered_on_first_sight_even_without_status() -> None:
    before, out = started(chaos(spec=TIMED))
    feed(before, results(out.commands), T0 + 0.1)
    written(before)
    core = restarted(before)
    # The object as replayed: no status (the recorder had not written it yet).
    out = core.on_object(event(chaos(spec=TIMED)), T0 + 10)
    assert ops(out) == [("n1", "recover", "default/web-0"), ("n2", "recover", "default/web-1")]


def test_a_running_experiment_is_not_applied_again_and_keeps_its_deadline() -> None:
    before, out = started(chaos(spec=TIMED))
    feed(before, results(out.commands), T0 + 0.1)
    written(before)
    core = restarted(before)
    out = core.on_object(event(chaos(spec=TIMED)), T0 + 1)
    assert ops(out) == [] and out.decisions  # the decision is re-announced, nothing re-applied
    assert core.next_wakeup(T0 + 1) == T0 + 3
    assert ops(core.tick(T0 + 3)) == [("n1", "recover", "default/web-0"), ("n2", "recover", "default/web-1")]


def test_apply_in_flight_at_the_kill_waits_for_its_result_when_still_wanted() -> None:
    before, out = started(chaos(spec=TIMED))
    written(before)
    core = restarted(before)
    assert ops(core.on_object(event(chaos(spec=TIMED)), T0 + 1)) == []
    # Its result, redelivered by the durable consumer, completes it.
    feed(core, results(out.commands), T0 + 1.1)
    assert {t.phase for t in core.experiments[UID].targets or []} == {INJECTED}


def test_apply_in_flight_at_the_kill_is_recovered_at_once_when_expired() -> None:
    before, _ = started(chaos(spec=TIMED))
    written(before)
    core = restarted(before)
    out = core.on_object(event(chaos(spec=TIMED)), T0 + 5)
    assert ops(out) == [("n1", "recover", "default/web-0"), ("n2", "recover", "default/web-1")]
    assert T0 + 5 < T0 + INFLIGHT_TIMEOUT_S  # not after the in-flight timeout


def test_memory_beats_a_lagging_status() -> None:
    before, out = started(chaos(spec=TIMED))
    feed(before, results(out.commands), T0 + 0.1)
    written(before)
    core = restarted(before)
    stale = {
        "experiment": {
            "desiredPhase": "Run",
            "containerRecords": [{"id": "default/web-0", "selectorKey": ".", "phase": "Not Injected"}],
        }
    }
    out = core.on_object(event(chaos(spec=TIMED, status=stale)), T0 + 10)
    assert len(ops(out)) == 2  # both targets remembered as injected, not the one record of the status


def test_a_deletion_seen_only_after_the_restart_still_recovers() -> None:
    before, out = started(chaos())
    feed(before, results(out.commands), T0 + 0.1)
    written(before)
    core = restarted(before)
    out = core.on_object(event(chaos(deleting=True), "DELETED"), T0 + 5)
    assert [op for _, op, _ in ops(out)] == ["recover", "recover"]


def test_memories_without_an_object_are_dropped_after_the_replay() -> None:
    before, _ = started(chaos())
    written(before)
    core = restarted(before)
    core.forget_unclaimed()
    assert written(core) == {UID: None}


def test_a_pod_that_vanished_is_still_recovered_on_its_remembered_node() -> None:
    before, out = started(chaos(spec=TIMED))
    feed(before, results(out.commands), T0 + 0.1)
    written(before)
    core = restarted(before, WEB1)  # web-0 is gone from the projection
    out = core.on_object(event(chaos(spec=TIMED)), T0 + 10)
    assert ops(out) == [("n1", "recover", "default/web-0"), ("n2", "recover", "default/web-1")]


def test_wire_encoding_round_trips_and_omits_defaults() -> None:
    core, _ = started(chaos(spec=TIMED), WEB0)
    [mem] = written(core).values()
    assert mem is not None
    raw = busmod.encode(mem)
    assert busmod.decode(raw, m.ExperimentMemory) == mem
    doc = msgspec.json.decode(raw)
    assert doc["targets"][0]["inflight"] == "apply" and "attempts" not in doc["targets"][0]
    assert "selection_error" not in doc and doc["created_at"] == T0


def test_a_failed_write_is_due_again() -> None:
    core, _ = started(chaos(spec=TIMED))
    [mem] = written(core).values()
    core.unsaved(UID)
    assert written(core) == {UID: mem}
