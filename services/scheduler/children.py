"""What a Schedule spawns, as pure functions over plain Kubernetes-shaped dicts: the child object
(named, labelled and owned as Chaos Mesh does), the fire time it stands for, and Chaos Mesh's
"finished" test that Forbid and history trimming rely on (evaluated at a given time).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chaosbus.common.crd import API_VERSION, CHAOS_KINDS, NOT_EXECUTED, ChaosObject, InvalidObject, decode_object, kinds
from chaosbus.common.crd.status import INJECTED, NOT_INJECTED, STOP
from chaosbus.common.durations import format_duration

Obj = dict[str, Any]
MANAGED_BY = "managed-by"  # Chaos Mesh's label naming the spawning Schedule
FIRE_TIME_ANNOTATION = "chaosbus.io/schedule-time"  # the fire this child stands for (RFC 3339)


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def child_name(schedule_name: str, fire_at: float) -> str:
    """`<schedule>-<unix seconds of the fire>`: one name per fire, so deciding a fire twice (a
    redelivery, a restarted scheduler) names the same object and creates nothing new.
    """
    return f"{schedule_name}-{int(fire_at)}"


def owner_ref(schedule: Obj) -> Obj:
    meta = schedule.get("metadata") or {}
    return {
        "apiVersion": API_VERSION,
        "kind": "Schedule",
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build(schedule: Obj, kind: str, spec: Obj, fire_at: float, *, duration_s: float | None) -> Obj:
    """The child for the fire at `fire_at`; `duration_s` is set on a spec that has no duration."""
    meta = schedule.get("metadata") or {}
    spec = dict(spec)
    if duration_s is not None and not spec.get("duration"):
        spec["duration"] = format_duration(duration_s)
    annotations = {FIRE_TIME_ANNOTATION: rfc3339(fire_at)}
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {
            "name": child_name(str(meta.get("name")), fire_at),
            "namespace": meta.get("namespace"),
            "labels": {MANAGED_BY: meta.get("name")},
            "annotations": annotations,
            "ownerReferences": [owner_ref(schedule)],
        },
        "spec": spec,
    }


def owner_uid(obj: Obj) -> str | None:
    """The uid of the Schedule that owns this object, if one does."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Schedule" and ref.get("apiVersion", API_VERSION).startswith("chaos-mesh.org/"):
            return str(ref.get("uid"))
    return None


@dataclass
class Child:
    """A Schedule's child as last seen, with what the finished test needs decoded once."""

    obj: Obj
    fire_at: float
    created_at: float
    decoded: ChaosObject | None  # None: a kind chaosbus does not execute (or a child it cannot read)
    delete_sent_at: float = 0.0
    annotate_sent: tuple[str, float] = ("", 0.0)

    @property
    def uid(self) -> str:
        return str(self.obj["metadata"].get("uid"))

    @property
    def name(self) -> str:
        return str(self.obj["metadata"].get("name"))

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind"))

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.obj["metadata"].get("annotations") or {})

    @property
    def deleting(self) -> bool:
        return bool(self.obj["metadata"].get("deletionTimestamp"))

    def stop_time(self) -> float | None:
        """When the child's duration runs out (None: no duration, or not an executed kind)."""
        duration = self.decoded.spec.duration_seconds() if self.decoded else None
        return (
            None
            if duration is None or self.decoded is None or kinds.one_shot(self.kind, self.decoded.spec)
            else self.created_at + duration
        )

    def finished(self, now: float) -> bool:
        """Chaos Mesh's test, plus what keeps a Schedule from waiting forever: a child that is
        being deleted, was refused, failed selection, or whose kind chaosbus does not execute
        (it never injects anything) counts as finished.
        """
        if self.deleting or (self.kind in NOT_EXECUTED and self.kind != "Workflow"):
            return True
        if self.kind == "Workflow":  # done, aborted, refused as invalid (Scheduled=False), or not executed
            return (
                _condition(self.obj, "Accomplished") == "True"
                or _condition(self.obj, "Aborted") == "True"
                or "False" in (_condition(self.obj, "Scheduled"), _condition(self.obj, "Supported"))
            )
        if self.decoded is None:
            return True
        status, spec = self.decoded.status, self.decoded.spec
        records = status.experiment.container_records if status else None
        if not records:
            selection_failed = any(
                c.type == "Selected" and c.status == "False" and c.reason for c in (status.conditions if status else [])
            )
            stop = self.stop_time()
            return selection_failed if kinds.one_shot(self.kind, spec) else (stop is not None and now >= stop)
        if kinds.one_shot(self.kind, spec):
            return all(r.phase == INJECTED for r in records)
        stop = self.stop_time()
        return (
            stop is not None
            and now >= stop
            and status is not None
            and status.experiment.desired_phase == STOP
            and all(r.phase == NOT_INJECTED for r in records)
        )


def read_child(obj: Obj, first_seen: float) -> Child:
    meta = obj.get("metadata") or {}
    created = parse_time(meta.get("creationTimestamp")) or first_seen
    fire_at = parse_time((meta.get("annotations") or {}).get(FIRE_TIME_ANNOTATION)) or created
    decoded = None
    if obj.get("kind") in CHAOS_KINDS:
        try:
            decoded = decode_object(obj)
        except InvalidObject:
            decoded = None
    return Child(obj=obj, fire_at=fire_at, created_at=created, decoded=decoded)


def _condition(obj: Obj, kind: str) -> str:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == kind:
            return str(c.get("status"))
    return ""
