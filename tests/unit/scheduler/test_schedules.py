"""The Schedule core with an injected clock, against a tiny in-memory recorder that carries out its
ObjectWrites and feeds the resulting object events back: fire counts, missed runs, Forbid/Allow,
history trimming, starting deadline, pause propagation, deletion, and restarts.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosbus.common import messages as m
from chaosbus.common.objects import merge_patch
from chaosbus.scheduler import children as ch
from chaosbus.scheduler.schedules import ScheduleCore

T0 = 1_800_000_000.0  # a whole second
PAUSE = "experiment.chaos-mesh.org/pause"
Obj = dict[str, Any]


def hello(duration: str | None = "1s") -> Obj:
    spec: Obj = {"mode": "all", "selector": {"labelSelectors": {"app": "web"}}}
    if duration:
        spec["duration"] = duration
    return spec


def schedule_obj(
    cron: str = "@every 2s", *, kind: str = "HelloWorldChaos", embedded: Obj | None = None, **spec: Any
) -> Obj:
    key = kind[0].lower() + kind[1:]  # the embedded key, e.g. helloWorldChaos
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "Schedule",
        "metadata": {"name": "sched", "namespace": "ns"},
        "spec": {"schedule": cron, "type": kind, key: embedded if embedded is not None else hello(), **spec},
    }


class World:
    """The recorder and watcher for the core: objects by (kind, name); children settle by time."""

    def __init__(self, core: ScheduleCore) -> None:
        self.core, self.objs = core, {}  # type: dict[tuple[str, str], Obj]
        self.uids = itertools.count(1)
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.overlaps: list[str] = []  # children still running when another was created
        self.notes: list[str] = []
        self.events: list[tuple[str, str]] = []  # (reason, message) of event writes, as the recorder gets them
        self.event_ids: list[str] = []
        self.injected_until: dict[str, float] = {}  # child name -> when its (fake) recovery completes

    def put(self, obj: Obj, now: float, change: str = "MODIFIED") -> None:
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        if "uid" not in meta:
            meta["uid"], meta["creationTimestamp"], change = f"uid-{next(self.uids)}", ch.rfc3339(now), "ADDED"
        self.objs[(obj["kind"], meta["name"])] = obj
        self.feed(change, obj, now)

    def feed(self, change: str, obj: Obj, now: float) -> None:
        meta = obj["metadata"]
        event = m.ObjectEvent(
            type=change,
            kind=obj["kind"],
            namespace=meta.get("namespace", ""),  # type: ignore[arg-type]
            name=meta["name"],
            uid=meta["uid"],
            object=msgspec.Raw(msgspec.json.encode(obj)),
        )
        self.carry_out(self.core.on_object(event, now), now)

    def carry_out(self, out: Any, now: float) -> None:
        self.notes += out.notes
        for w in out.writes:
            self.write(w, now)

    def write(self, w: m.ObjectWrite, now: float) -> None:
        key = (w.kind, w.name)
        if w.op == "event":
            body = msgspec.json.decode(w.object)
            assert body["type"] == "Warning" and w.kind == "Schedule" and w.uid == self.objs[key]["metadata"]["uid"]
            self.events.append((w.reason, body["message"]))
            self.event_ids.append(w.write_id)
            return
        current = self.objs.get(key)
        if w.op == "create":
            if current is None:
                self.overlaps += [
                    n
                    for (k, n), o in self.objs.items()
                    if k != "Schedule" and (o.get("status") or {}).get("experiment", {}).get("desiredPhase") == "Run"
                ]
                self.created.append(w.name)
                self.put(msgspec.json.decode(w.object), now)
            return
        if current is None or current["metadata"]["uid"] != w.uid:
            return
        if w.op == "delete":
            del self.objs[key]
            self.deleted.append(w.name)
            self.feed("DELETED", current, now)
            return
        new = copy.deepcopy(current)
        if w.op == "status":
            new["status"] = merge_patch(new.get("status") or {}, msgspec.json.decode(w.object))
        else:
            ann = {**new["metadata"].get("annotations", {}), **w.annotations}
            new["metadata"]["annotations"] = {k: v for k, v in ann.items() if v is not None}
        self.put(new, now)

    def settle(self, now: float, recovery_s: float = 0.2) -> None:
        """Children's status as the rest of chaosbus would write it: injected until duration, then
        recovered `recovery_s` later."""
        for (kind, _), obj in list(self.objs.items()):
            if kind == "Schedule":
                continue
            start = ch.parse_time(obj["metadata"]["creationTimestamp"]) or now
            duration = obj["spec"].get("duration")
            end = None if not duration else start + float(duration.rstrip("s"))
            stopped = end is not None and now >= end + recovery_s
            record = {"id": "ns/web-0", "selectorKey": ".", "phase": "Not Injected" if stopped else "Injected"}
            want = {
                "conditions": [],
                "experiment": {"desiredPhase": "Stop" if stopped else "Run", "containerRecords": [record]},
            }
            if obj.get("status") != want:
                self.put({**obj, "status": want}, now)

    def run(self, start: float, end: float, step: float = 0.1, **settle: float) -> None:
        now = start
        while now <= end + 1e-9:
            self.settle(now, **settle)
            self.carry_out(self.core.tick(now), now)
            now = round(now + step, 6)

    def children(self) -> list[str]:
        return sorted(name for kind, name in self.objs if kind != "Schedule")

    @property
    def schedule(self) -> Obj:
        return self.objs[("Schedule", "sched")]


def start(obj: Obj, core: ScheduleCore | None = None) -> World:
    world = World(core or ScheduleCore(started_at=T0))
    world.put(obj, T0)
    return world


def test_every_2s_fires_once_per_period_with_names_labels_owner_and_status() -> None:
    world = start(schedule_obj(historyLimit=10))
    world.run(T0, T0 + 9)
    assert world.created == [f"sched-{int(T0) + k}" for k in (2, 4, 6, 8)]
    child = world.objs[("HelloWorldChaos", f"sched-{int(T0) + 2}")]
    meta = child["metadata"]
    assert meta["labels"] == {"managed-by": "sched"} and meta["namespace"] == "ns"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "Schedule",
            "name": "sched",
            "uid": world.schedule["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert child["spec"] == hello()
    status = world.schedule["status"]
    assert status["time"] == ch.rfc3339(T0 + 8)
    assert [r["name"] for r in status["active"]] == world.children()


def test_forbid_waits_for_the_running_child_and_never_overlaps() -> None:
    world = start(schedule_obj(embedded=hello("3s"), historyLimit=10))
    world.run(T0, T0 + 12)
    # Each child runs 3 s (+0.2 s recovery): the fire at +4 waits for the first child and is made
    # at +5.2 (catch-up, as Kubernetes CronJob), the one at +6 is overtaken by +8, and so on.
    assert world.created == [f"sched-{int(T0) + k}" for k in (2, 4, 8, 10)]
    assert world.overlaps == []
    assert any(n.startswith("Forbid:") for n in world.notes)


def test_allow_overlaps() -> None:
    world = start(schedule_obj(embedded=hello("3s"), historyLimit=10, concurrencyPolicy="Allow"))
    world.run(T0, T0 + 9)
    assert len(world.created) == 4 and world.overlaps


def test_history_limit_trims_oldest_finished_children() -> None:
    world = start(schedule_obj(historyLimit=2))
    world.run(T0, T0 + 13)
    assert len(world.created) == 6
    assert world.children() == world.created[-2:]
    assert world.deleted == world.created[:4]


def test_omitted_history_limit_keeps_three_not_zero() -> None:
    world = start(schedule_obj())
    world.run(T0, T0 + 13)
    assert world.children() == world.created[-3:]


def test_forbid_with_a_continuous_child_without_duration_runs_it_until_the_next_fire() -> None:
    world = start(schedule_obj("@every 5s", embedded=hello(None)))
    world.run(T0, T0 + 16, step=0.25, recovery_s=0.0)
    assert world.created == [f"sched-{int(T0) + k}" for k in (5, 10, 15)]
    assert world.objs[("HelloWorldChaos", world.created[0])]["spec"]["duration"] == "5s"


def test_allow_leaves_a_duration_less_child_as_written() -> None:
    world = start(schedule_obj("@every 5s", embedded=hello(None), concurrencyPolicy="Allow"))
    world.run(T0, T0 + 6)
    assert "duration" not in world.objs[("HelloWorldChaos", world.created[0])]["spec"]


def test_a_long_outage_catches_up_one_run_only() -> None:
    world = start(schedule_obj("* * * * * *"))  # every second
    world.run(T0, T0 + 0.5)
    world.run(T0 + 86_400, T0 + 86_400)  # a day of missed fires
    assert world.created == [f"sched-{int(T0) + 86_400}"]


def test_starting_deadline_skips_a_fire_that_is_too_late() -> None:
    world = start(schedule_obj("@every 10s", startingDeadlineSeconds=3))
    world.run(T0 + 15, T0 + 15)  # the fire at +10 is 5 s late
    assert world.created == [] and any(n.startswith("MissSchedule:") for n in world.notes)
    world.run(T0 + 21, T0 + 21)  # the fire at +20 is 1 s late
    assert world.created == [f"sched-{int(T0) + 20}"]


def test_pause_stops_fires_and_pauses_children_resume_unpauses_them() -> None:
    world = start(schedule_obj("@every 2s", embedded=hello("10s"), concurrencyPolicy="Allow"))
    world.run(T0, T0 + 2.5)
    paused = copy.deepcopy(world.schedule)
    paused["metadata"]["annotations"] = {PAUSE: "true"}
    world.put(paused, T0 + 2.6)
    assert world.objs[("HelloWorldChaos", world.created[0])]["metadata"]["annotations"][PAUSE] == "true"
    world.run(T0 + 2.6, T0 + 9)
    assert len(world.created) == 1
    resumed = copy.deepcopy(world.schedule)
    resumed["metadata"]["annotations"] = {PAUSE: "false"}
    world.put(resumed, T0 + 9.1)
    assert world.objs[("HelloWorldChaos", world.created[0])]["metadata"]["annotations"][PAUSE] == "false"
    world.run(T0 + 9.1, T0 + 10.5)
    assert len(world.created) == 3  # one catch-up fire (+8, late) then +10


def test_deleting_the_schedule_deletes_its_children() -> None:
    world = start(schedule_obj(embedded=hello("10s"), concurrencyPolicy="Allow"))
    world.run(T0, T0 + 5)
    assert len(world.children()) == 2
    gone = world.objs.pop(("Schedule", "sched"))
    world.feed("DELETED", gone, T0 + 5.1)
    assert world.children() == []


def test_a_restarted_core_resumes_from_status_and_children_without_firing_twice() -> None:
    world = start(schedule_obj(historyLimit=10))
    world.run(T0, T0 + 4.5)
    fresh = ScheduleCore(started_at=T0 + 4.6)
    world.core = fresh
    for obj in list(world.objs.values()):  # the ordered replay of chaos.obj.>
        world.feed("ADDED", obj, T0 + 4.6)
    world.run(T0 + 4.6, T0 + 7)
    assert world.created == [f"sched-{int(T0) + k}" for k in (2, 4, 6)]


def test_a_restart_before_status_was_written_names_the_same_child() -> None:
    world = start(schedule_obj(historyLimit=10))
    core = world.core
    out = core.tick(T0 + 2)
    creates = [w for w in out.writes if w.op == "create"]
    assert [w.name for w in creates] == [f"sched-{int(T0) + 2}"]
    again = ScheduleCore(started_at=T0 + 2.5)
    replayed = again.on_object(
        m.ObjectEvent(
            type="ADDED",
            kind="Schedule",
            namespace="ns",
            name="sched",
            uid=world.schedule["metadata"]["uid"],
            object=msgspec.Raw(msgspec.json.encode(world.schedule)),
        ),
        T0 + 2.5,
    )
    second = [w for w in replayed.writes + again.tick(T0 + 2.5).writes if w.op == "create"]
    assert [(w.name, w.write_id) for w in second] == [(w.name, w.write_id) for w in creates]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"schedule": "61 * * * *"}, "spec.schedule: invalid cron expression"),
        ({"historyLimit": 0}, "spec.historyLimit: must be at least 1"),
        ({"concurrencyPolicy": "Replace"}, "spec.concurrencyPolicy: must be Forbid or Allow"),
        ({"type": "PodChaos"}, "type is PodChaos, so only spec.podChaos may be set"),
    ],
)
def test_invalid_schedule_gets_a_status_condition_naming_the_field_and_never_fires(spec: Obj, message: str) -> None:
    world = start(schedule_obj() | {"spec": {**schedule_obj()["spec"], **spec}})
    world.run(T0, T0 + 5)
    assert world.created == []
    condition = world.schedule["status"]["conditions"][0]
    assert condition["reason"] == "InvalidSpec" and message in condition["message"]


def test_children_of_a_kind_not_executed_are_created_and_count_as_finished() -> None:
    kernel = {"mode": "all", "selector": {}}
    world = start(schedule_obj("@every 2s", kind="KernelChaos", embedded=kernel, historyLimit=1))
    world.run(T0, T0 + 6.5)
    assert len(world.created) == 3 and world.children() == world.created[-1:]


def test_one_shot_child_finishes_when_injected() -> None:
    kill = {"action": "pod-kill", "mode": "one", "selector": {"labelSelectors": {"app": "web"}}}
    world = start(schedule_obj("@every 2s", kind="PodChaos", embedded=kill))
    world.run(T0, T0 + 6.5)  # settle() marks records Injected at once: each fire may go
    assert len(world.created) == 3 and "duration" not in world.objs[("PodChaos", world.created[0])]["spec"]


def test_orphans_of_an_unknown_schedule_are_deleted_after_a_grace() -> None:
    world = start(schedule_obj(embedded=hello("100s")))
    world.run(T0, T0 + 2.5)
    orphan = world.objs[("HelloWorldChaos", world.created[0])]
    core = ScheduleCore(started_at=T0 + 3)
    world.core = core
    world.feed("ADDED", orphan, T0 + 3)  # its Schedule was deleted while the scheduler was down
    world.run(T0 + 20, T0 + 20)
    assert world.children() == [orphan["metadata"]["name"]]
    world.run(T0 + 34, T0 + 34)
    assert world.children() == []


def test_nothing_is_decided_before_the_replay_completes() -> None:
    world = start(schedule_obj(embedded=hello("100s")))
    world.run(T0, T0 + 2.5)
    core = ScheduleCore(started_at=T0 + 5, ready=False)
    world.core = core
    world.feed("ADDED", world.schedule, T0 + 5)  # a fire is due (+4) but its running child is not replayed yet
    world.run(T0 + 5, T0 + 5)
    for (kind, _), obj in list(world.objs.items()):
        if kind != "Schedule":
            world.feed("ADDED", obj, T0 + 5.1)
    core.ready = True
    world.run(T0 + 5.2, T0 + 5.2)
    assert len(world.created) == 1  # Forbid held: the replayed child is still running


@settings(max_examples=40, deadline=None)
@given(
    period=st.integers(1, 5),
    duration=st.integers(1, 8),
    step=st.sampled_from([0.1, 0.25, 0.5, 1.0]),
    history=st.integers(1, 4),
    allow=st.booleans(),
)
def test_any_timetable_fires_each_time_at_most_once_and_forbid_never_overlaps(
    period: int, duration: int, step: float, history: int, allow: bool
) -> None:
    world = start(
        schedule_obj(
            f"@every {period}s",
            embedded=hello(f"{duration}s"),
            historyLimit=history,
            concurrencyPolicy="Allow" if allow else "Forbid",
        )
    )
    world.run(T0, T0 + 20, step=step)
    fires = [int(n.rsplit("-", 1)[1]) - int(T0) for n in world.created]
    assert len(fires) == len(set(fires)) and fires == sorted(fires)
    assert all(f % period == 0 and 0 < f <= 20 for f in fires)
    if allow:
        assert len(fires) == 20 // period  # every fire, none missed
    else:
        assert world.overlaps == []
        assert len(fires) >= min(20 // period, int(20 // (duration + 0.2 + step + period)))
    running = [
        n
        for n in world.children()
        if (world.objs[("HelloWorldChaos", n)].get("status") or {}).get("experiment", {}).get("desiredPhase") == "Run"
    ]
    assert len(world.children()) <= history + len(running)


@pytest.mark.parametrize(
    ("conditions", "finished"),
    [
        ([], False),
        ([{"type": "Scheduled", "status": "True"}, {"type": "Accomplished", "status": "False"}], False),
        ([{"type": "Scheduled", "status": "True"}, {"type": "Accomplished", "status": "True"}], True),
        ([{"type": "Accomplished", "status": "False"}, {"type": "Aborted", "status": "True"}], True),
        ([{"type": "Scheduled", "status": "False", "reason": "InvalidSpec"}], True),
    ],
)
def test_a_workflow_child_is_finished_when_accomplished_aborted_or_refused(
    conditions: list[Obj], finished: bool
) -> None:
    obj = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "w-1", "namespace": "ns", "uid": "w", "creationTimestamp": ch.rfc3339(T0)},
        "spec": {"entry": "a", "templates": []},
        "status": {"conditions": conditions},
    }
    assert ch.read_child(obj, T0).finished(T0 + 100) is finished


def test_objects_that_are_not_children_are_ignored_without_decoding() -> None:
    core = ScheduleCore(started_at=T0)
    plain = m.ObjectEvent(
        type="ADDED", kind="NetworkChaos", namespace="ns", name="x", uid="x", object=msgspec.Raw(b"not even json")
    )
    assert core.on_object(plain, T0).writes == [] and core.children == {}


def test_an_updated_schedule_takes_effect_from_the_next_fire() -> None:
    world = start(schedule_obj(historyLimit=10))
    world.run(T0, T0 + 4.5)
    updated = copy.deepcopy(world.schedule)
    updated["spec"]["schedule"] = "@every 5s"
    world.put(updated, T0 + 4.6)
    world.run(T0 + 4.6, T0 + 11)
    # +5 is the newest due fire of the new timetable (anchored at the creation, as before)
    assert world.created == [f"sched-{int(T0) + k}" for k in (2, 4, 5, 10)]


def test_cron_with_seconds_and_a_time_zone_names_children_by_the_utc_fire() -> None:
    world = start(schedule_obj("CRON_TZ=Asia/Kolkata */3 * * * * *", historyLimit=10))
    world.run(T0, T0 + 7)
    assert world.created == [f"sched-{int(T0) + k}" for k in (3, 6)]


def test_a_workflow_schedule_spawns_workflows_and_forbid_waits_until_one_is_accomplished() -> None:
    flow = {"entry": "pause", "templates": [{"name": "pause", "templateType": "Suspend", "deadline": "1s"}]}
    world = start(schedule_obj(kind="Workflow", embedded=flow, historyLimit=10))
    world.run(T0, T0 + 2.5, step=0.5)
    first = world.objs[("Workflow", world.created[0])]
    assert first["spec"] == flow and first["metadata"]["ownerReferences"][0]["kind"] == "Schedule"
    world.settle = lambda now, **_: None  # type: ignore[method-assign]  # the workflow never finishes
    world.run(T0 + 3, T0 + 6.5, step=0.5)
    assert len(world.created) == 1
    done = copy.deepcopy(first)
    done["status"] = {"conditions": [{"type": "Accomplished", "status": "True"}]}
    world.put(done, T0 + 6.6)
    assert len(world.created) == 2  # the waiting fire (+6) goes as soon as the workflow is accomplished


def test_forbid_and_missed_fires_are_warning_events_on_the_schedule_once_each() -> None:
    """Chaos Mesh records `Forbid` and `MissSchedule` Events on the Schedule; each skipped fire is
    reported once however many ticks it waits, with an id a restarted scheduler would repeat.
    """
    world = start(schedule_obj(embedded=hello("3s"), historyLimit=10))
    world.run(T0, T0 + 5)  # the fire at +4 waits for the child of +2 (running until +5.2)
    assert world.events == [("Forbid", f"Forbid spawning new job because: sched-{int(T0) + 2} is still running")]
    assert world.event_ids == [f"uid-1.{int(T0) + 4}.Forbid"]

    late = start(schedule_obj("@every 10s", startingDeadlineSeconds=3))
    late.run(T0 + 15, T0 + 16)  # the fire at +10 is 5 s late
    stamp = "Fri, 15 Jan 2027 08:00:10 +0000"
    assert late.events == [("MissSchedule", f"Missed scheduled time to start a job: {stamp}")]


def test_a_long_outage_reports_the_fires_it_does_not_catch_up() -> None:
    world = start(schedule_obj("@every 10s"))
    world.run(T0 + 55, T0 + 56)  # +10 .. +40 are not caught up, +50 runs
    assert world.created == [f"sched-{int(T0) + 50}"]
    assert world.events == [
        (
            "MissSchedule",
            "Missed scheduled times from Fri, 15 Jan 2027 08:00:10 +0000: only "
            "the latest, Fri, 15 Jan 2027 08:00:50 +0000, is run",
        )
    ]


def test_pausing_a_workflow_schedule_is_not_supported_and_its_workflows_are_not_annotated() -> None:
    flow = {"entry": "pause", "templates": [{"name": "pause", "templateType": "Suspend", "deadline": "60s"}]}
    world = start(schedule_obj(kind="Workflow", embedded=flow))
    world.settle = lambda now, **_: None  # type: ignore[method-assign]
    world.run(T0, T0 + 2.5, step=0.5)
    paused = copy.deepcopy(world.schedule)
    paused["metadata"]["annotations"] = {PAUSE: "true"}
    world.put(paused, T0 + 3)
    world.run(T0 + 3, T0 + 9, step=0.5)
    assert len(world.created) == 1  # fires stop
    assert PAUSE not in (world.objs[("Workflow", world.created[0])]["metadata"].get("annotations") or {})
    assert world.events == [("NotSupported", "pausing a workflow schedule is not supported")]


def test_fires_skipped_while_forbid_waits_are_reported_once_when_the_next_child_starts() -> None:
    world = start(schedule_obj(embedded=hello("7s"), historyLimit=10))
    world.run(T0, T0 + 9.5)  # the child of +2 runs until +9.2: +4, +6, +8 wait; +8 runs at +9.2
    assert world.created == [f"sched-{int(T0) + 2}", f"sched-{int(T0) + 8}"]
    reasons = [r for r, _ in world.events]
    assert reasons == ["Forbid", "Forbid", "Forbid", "MissSchedule"]  # not one MissSchedule per wait
    assert world.events[-1][1] == (
        "Missed scheduled times from Fri, 15 Jan 2027 08:00:04 +0000: only the latest, "
        "Fri, 15 Jan 2027 08:00:08 +0000, is run"
    )


def test_a_schedule_spawns_golangchaos_chaosbus_own_kind() -> None:
    spec = {**hello("5s"), "action": "sql-error", "containerName": ["app"]}
    world = start(schedule_obj(kind="GolangChaos", embedded=spec))
    world.run(T0, T0 + 3)
    assert world.created == [f"sched-{int(T0) + 2}"]
    assert world.objs[("GolangChaos", world.created[0])]["spec"] == spec
