"""The scheduler's pure Schedule logic, driven by an injected clock: Schedule objects and their
children in (object events), ObjectWrite messages out (create/delete children, pause them, write
the Schedule's `status.active` and `status.time`); the recorder carries them out.

Progress is derived, never kept only here: the last fire is the newest of `status.time` and the
children's fire times, and a child's name is its fire time, so a restarted scheduler (or one that
decides a fire twice) names the same child and nothing fires twice. Per tick a Schedule fires at
most once, for the newest due fire time, however many were missed (O(1), see `cron.latest`).

What Chaos Mesh reports as Events on the Schedule (`Forbid`, `MissSchedule`, `NotSupported` for
pausing a Workflow schedule) leaves as `event` writes, once per fire, with ids derived from the
fire so a restarted scheduler's repeat is deduplicated on the stream.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import msgspec

from chaosbus.common import cron
from chaosbus.common import messages as m
from chaosbus.common.crd import API_VERSION, CHAOS_KINDS, kinds, schedule
from chaosbus.common.crd.errors import from_msgspec
from chaosbus.common.crd.meta import PAUSE_ANNOTATION
from chaosbus.common.crd.orchestration import ScheduleSpec
from chaosbus.scheduler import children as ch

Obj = dict[str, Any]
DEFAULT_HISTORY_LIMIT = 3  # Chaos Mesh's 0 (omitted) deletes every finished child at once
RESEND_S = 30.0  # a write whose effect has not been seen by then is sent again
ORPHAN_GRACE_S = 30.0  # a child whose Schedule is unknown this long after we saw it is deleted


@dataclass
class Sched:
    obj: Obj
    spec: ScheduleSpec | None
    cron: cron.CronSpec | None
    problems: list[str]
    created_at: float
    fired_at: float = 0.0  # the newest fire decided here (its child may not be seen yet)
    fired_child: str = ""
    noted: set[tuple[str, float]] = field(default_factory=set)  # (what, fire) reported: each once
    pause_seen: float = 0.0
    status_sent: tuple[Obj, Obj, float] = field(default_factory=lambda: ({}, {}, 0.0))  # (patch, status then, at)

    @property
    def uid(self) -> str:
        return str(self.obj["metadata"].get("uid"))

    @property
    def paused(self) -> bool:
        return (self.obj["metadata"].get("annotations") or {}).get(PAUSE_ANNOTATION) == "true"

    def paused_since(self, now: float) -> float:
        """When this pause began as far as this core knows (first seen paused), for once-per-pause notes."""
        if not self.paused:
            self.pause_seen = 0.0
        elif not self.pause_seen:
            self.pause_seen = now
        return self.pause_seen

    def last_fire(self, kids: list[ch.Child]) -> float:
        recorded = ch.parse_time((self.obj.get("status") or {}).get("time")) or 0.0
        return max([recorded, self.created_at, self.fired_at, *(c.fire_at for c in kids)])


@dataclass
class Outputs:
    writes: list[m.ObjectWrite] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what happened, for the log (Spawned, Forbid, ...)


class ScheduleCore:
    def __init__(self, started_at: float = 0.0, *, ready: bool = True) -> None:
        # Not ready while the object replay runs: a Schedule seen before its children would fire
        # past a running child (Forbid) or take them for orphans.
        self.ready = ready
        self.schedules: dict[str, Sched] = {}
        self.children: dict[str, ch.Child] = {}
        self.first_seen: dict[str, float] = {}  # child uid -> when first seen (orphan detection)
        self.started_at = started_at

    # --- inputs -------------------------------------------------------------------------------

    def on_object(self, event: m.ObjectEvent, now: float) -> Outputs:
        if event.kind != "Schedule" and event.uid not in self.children and b'"Schedule"' not in bytes(event.object):
            return Outputs()  # not a Schedule's child: spare decoding a large experiment a second time
        try:
            obj = msgspec.json.decode(event.object)
        except msgspec.DecodeError:
            return Outputs()
        if not isinstance(obj, dict):
            return Outputs()
        if event.kind == "Schedule":
            return self._on_schedule(event, obj, now)
        owner = ch.owner_uid(obj)
        if owner is None:
            return Outputs()
        if event.type == "DELETED":
            self.children.pop(event.uid, None)
            self.first_seen.pop(event.uid, None)
        else:
            seen = self.first_seen.setdefault(event.uid, now)
            old = self.children.get(event.uid)
            kid = ch.read_child(obj, seen)
            if old is not None:
                kid.delete_sent_at, kid.annotate_sent = old.delete_sent_at, old.annotate_sent
            self.children[event.uid] = kid
        sched = self.schedules.get(owner)
        return self.reconcile(sched, now) if sched is not None else Outputs()

    def _on_schedule(self, event: m.ObjectEvent, obj: Obj, now: float) -> Outputs:
        meta = obj.get("metadata") or {}
        if event.type == "DELETED" or meta.get("deletionTimestamp"):
            self.schedules.pop(event.uid, None)
            out = Outputs()
            for kid in self.kids(event.uid) if self.ready else []:
                out.writes += self._delete(kid, now, "ScheduleDeleted")
            return out
        old = self.schedules.get(event.uid)
        sched = _read(obj, now)
        if old is not None:
            sched.fired_at, sched.fired_child = old.fired_at, old.fired_child
            sched.noted, sched.status_sent, sched.pause_seen = old.noted, old.status_sent, old.pause_seen
        self.schedules[event.uid] = sched
        return self.reconcile(sched, now)

    def tick(self, now: float) -> Outputs:
        out = Outputs()
        if not self.ready:
            return out
        for sched in list(self.schedules.values()):
            _extend(out, self.reconcile(sched, now))
        if now - self.started_at >= ORPHAN_GRACE_S:
            for kid in list(self.children.values()):
                owner = ch.owner_uid(kid.obj)
                if owner not in self.schedules and now - self.first_seen.get(kid.uid, now) >= ORPHAN_GRACE_S:
                    out.writes += self._delete(kid, now, "OwnerGone")
        return out

    def next_wakeup(self, now: float) -> float | None:
        times: list[float] = []
        for sched in self.schedules.values():
            if sched.cron is None or sched.paused:
                continue
            kids = self.kids(sched.uid)
            nxt = sched.cron.next_after(max(now, sched.last_fire(kids)), anchor=sched.created_at)
            if nxt is not None:
                times.append(nxt)
            times += [t for k in kids if (t := k.stop_time()) is not None and t > now]
        return min(times) if times else None

    def kids(self, schedule_uid: str) -> list[ch.Child]:
        """The Schedule's children by ownerReference uid (not by the `managed-by` label, which
        Chaos Mesh matches across namespaces), oldest fire first.
        """
        return sorted(
            (k for k in self.children.values() if ch.owner_uid(k.obj) == schedule_uid),
            key=lambda k: (k.fire_at, k.name),
        )

    # --- reconcile ----------------------------------------------------------------------------

    def reconcile(self, sched: Sched, now: float) -> Outputs:
        out = Outputs()
        if not self.ready:
            return out
        if sched.problems:
            _status(
                out,
                sched,
                {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "False",
                            "reason": "InvalidSpec",
                            "message": "; ".join(sched.problems),
                        }
                    ]
                },
                now,
            )
            return out
        kids = self.kids(sched.uid)
        paused_at = sched.paused_since(now)
        if paused_at and sched.spec is not None and sched.spec.type == "Workflow":
            # As Chaos Mesh: a Workflow has no pause, so its children run on (fires do stop).
            _note(out, sched, "NotSupported", paused_at, "pausing a workflow schedule is not supported", now)
        for kid in kids:
            out.writes += self._pause_child(sched, kid, now)
        if not sched.paused:
            self._fire(sched, kids, now, out)
        for kid in self._to_trim(sched, kids, now):
            out.writes += self._delete(kid, now, "HistoryLimit")
        active = sorted(
            (
                {
                    "apiVersion": k.obj.get("apiVersion", API_VERSION),
                    "kind": k.kind,
                    "name": k.name,
                    "namespace": k.obj["metadata"].get("namespace"),
                    "uid": k.uid,
                }
                for k in kids
                if not k.delete_sent_at
            ),
            key=lambda r: str(r["name"]),
        )
        last = sched.last_fire(kids)
        desired: Obj = {"active": active or None, "conditions": None}
        if last > sched.created_at:
            desired["time"] = ch.rfc3339(last)
        _status(out, sched, desired, now)
        return out

    def _fire(self, sched: Sched, kids: list[ch.Child], now: float, out: Outputs) -> None:
        assert sched.spec is not None and sched.cron is not None
        last = sched.last_fire(kids)
        fire = sched.cron.latest(last, now, anchor=sched.created_at)
        if fire is None:
            return
        deadline = sched.spec.starting_deadline_seconds
        if deadline is not None and now - fire > deadline:
            sched.fired_at = fire  # skipped for good: the next fire is the next chance
            _note(out, sched, "MissSchedule", fire, f"Missed scheduled time to start a job: {rfc1123(fire)}", now)
            return
        running = [k.name for k in kids if not k.finished(now)]
        if sched.fired_child and sched.fired_child not in {k.name for k in kids} and now - sched.fired_at < RESEND_S:
            running.append(sched.fired_child)  # created, not seen yet
        if sched.spec.concurrency_policy != "Allow" and running:
            _note(out, sched, "Forbid", fire, f"Forbid spawning new job because: {running[0]} is still running", now)
            return
        first = sched.cron.next_after(last, anchor=sched.created_at)
        if first is not None and first < fire:  # older fires are not caught up (Chaos Mesh gives up past 100)
            _note(
                out,
                sched,
                "MissSchedule",
                fire,
                f"Missed scheduled times from {rfc1123(first)}: only the latest, {rfc1123(fire)}, is run",
                now,
                what="caught-up",
            )
        kind, spec = schedule.embedded(sched.spec)
        child = ch.build(sched.obj, kind, spec, fire, duration_s=self._forced_duration(sched, kind, fire))
        meta = child["metadata"]
        out.writes.append(
            m.ObjectWrite(
                write_id=f"{sched.uid}.{int(fire)}.create",
                op="create",
                kind=kind,
                namespace=meta["namespace"],
                name=meta["name"],
                reason="Spawned",
                object=msgspec.Raw(msgspec.json.encode(child)),
                at=now,
            )
        )
        out.notes.append(f"Spawned {kind}/{meta['name']} for the fire at {ch.rfc3339(fire)}")
        sched.fired_at, sched.fired_child = fire, meta["name"]

    def _forced_duration(self, sched: Sched, kind: str, fire: float) -> float | None:
        """Forbid with a continuous child that has no duration would block forever (Chaos Mesh's
        trap): such a child runs until the next fire instead.
        """
        assert sched.spec is not None and sched.cron is not None
        if sched.spec.concurrency_policy == "Allow" or kind not in CHAOS_KINDS:
            return None
        _, spec = schedule.embedded(sched.spec)
        if spec.get("duration") or kinds.one_shot(kind, spec):
            return None
        nxt = sched.cron.next_after(fire, anchor=sched.created_at)
        return None if nxt is None else nxt - fire

    def _to_trim(self, sched: Sched, kids: list[ch.Child], now: float) -> list[ch.Child]:
        """Oldest children beyond historyLimit, if finished (a running one stays until it finishes)."""
        assert sched.spec is not None
        limit = sched.spec.history_limit or DEFAULT_HISTORY_LIMIT
        kept = [k for k in kids if not k.delete_sent_at]
        return [k for k in kept[: max(0, len(kept) - limit)] if k.finished(now)]

    def _pause_child(self, sched: Sched, kid: ch.Child, now: float) -> list[m.ObjectWrite]:
        """Pausing a Schedule pauses its children; resuming it resumes the ones it paused."""
        current = kid.annotations.get(PAUSE_ANNOTATION)
        want = "true" if sched.paused else ("false" if current == "true" else current)
        if want == current or kid.deleting or kid.delete_sent_at or kid.kind == "Workflow":
            return []
        value, at = kid.annotate_sent
        if value == want and now - at < RESEND_S:
            return []
        kid.annotate_sent = (str(want), now)
        return [
            m.ObjectWrite(
                write_id=uuid.uuid4().hex,
                op="annotate",
                kind=kid.kind,
                uid=kid.uid,
                namespace=str(kid.obj["metadata"].get("namespace")),
                name=kid.name,
                annotations={PAUSE_ANNOTATION: want},
                reason="Paused" if sched.paused else "Resumed",
                at=now,
            )
        ]

    def _delete(self, kid: ch.Child, now: float, reason: str) -> list[m.ObjectWrite]:
        if kid.delete_sent_at and now - kid.delete_sent_at < RESEND_S:
            return []
        kid.delete_sent_at = now
        return [
            m.ObjectWrite(
                write_id=f"{kid.uid}.delete.{int(now)}",
                op="delete",
                kind=kid.kind,
                uid=kid.uid,
                namespace=str(kid.obj["metadata"].get("namespace")),
                name=kid.name,
                reason=reason,
                at=now,
            )
        ]


def _read(obj: Obj, now: float) -> Sched:
    meta = obj.get("metadata") or {}
    created = ch.parse_time(meta.get("creationTimestamp")) or now
    try:
        spec = msgspec.convert(obj.get("spec") or {}, ScheduleSpec)
    except msgspec.ValidationError as e:
        return Sched(obj, None, None, from_msgspec(e, "spec").errors, created)
    problems = schedule.problems(spec)
    parsed = None if problems else cron.parse(spec.schedule)
    return Sched(obj, spec, parsed, problems, created)


def _status(out: Outputs, sched: Sched, desired: Obj, now: float) -> None:
    """A status merge patch when the stored status differs from `desired` (None values: remove)."""
    current = sched.obj.get("status") or {}
    if all(current.get(k) == v for k, v in desired.items()):
        return
    sent, before, at = sched.status_sent
    if sent == desired and before == current and now - at < RESEND_S:
        return  # on its way: the stored status has not moved since it was sent
    sched.status_sent = (desired, current, now)
    meta = sched.obj["metadata"]
    out.writes.append(
        m.ObjectWrite(
            write_id=uuid.uuid4().hex,
            op="status",
            kind="Schedule",
            uid=sched.uid,
            namespace=str(meta.get("namespace")),
            name=str(meta.get("name")),
            object=msgspec.Raw(msgspec.json.encode(desired)),
            at=now,
        )
    )


def rfc1123(t: float) -> str:
    """Go's RFC1123Z, the format of Chaos Mesh's MissSchedule message."""
    return format_datetime(datetime.fromtimestamp(t, UTC))


def _note(out: Outputs, sched: Sched, reason: str, fire: float, message: str, now: float, *, what: str = "") -> None:
    """A Warning Event on the Schedule, once per (what, fire), and the same as a log note."""
    what = what or reason
    if (what, fire) in sched.noted:
        return
    sched.noted = {n for n in sched.noted if n[0] != what or n[1] >= fire} | {(what, fire)}  # bounded
    out.notes.append(f"{reason}: {message}")
    meta = sched.obj["metadata"]
    out.writes.append(
        m.ObjectWrite(
            write_id=f"{sched.uid}.{int(fire)}.{what}",
            op="event",
            kind="Schedule",
            uid=sched.uid,
            namespace=str(meta.get("namespace")),
            name=str(meta.get("name")),
            reason=reason,
            at=now,
            object=msgspec.Raw(msgspec.json.encode({"type": "Warning", "message": message})),
        )
    )


def _extend(out: Outputs, other: Outputs) -> None:
    out.writes += other.writes
    out.notes += other.notes
