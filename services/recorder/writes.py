"""The recorder's pure rules for ObjectWrite messages (objects the scheduler decides: Schedule
children, orchestration status, Events): what a status merge patch or an annotation change does to a
stored object, when an existing object already is the child a create asks for, and the Event an
event write asks for (in local mode kept in the object store, one per object and reason).
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from chaosbus.common import messages as m
from chaosbus.common import objects as o
from chaosbus.common.crd import API_VERSION
from chaosbus.recorder.events import NORMAL, WARNING, KubeEvent

Obj = dict[str, Any]


def payload(write: m.ObjectWrite) -> Any:
    return msgspec.json.decode(write.object)


def is_target(obj: Obj, write: m.ObjectWrite) -> bool:
    """The write concerns this stored object (same uid, or no uid asked for)."""
    return not write.uid or o.meta(obj).get("uid") == write.uid


def status_change(obj: Obj, write: m.ObjectWrite) -> Obj | None:
    """The object with the write's status merge patch applied; None if unchanged or not the target."""
    if not is_target(obj, write):
        return None
    patch = payload(write)
    if not isinstance(patch, dict):
        raise ValueError(f"{write.kind}/{write.namespace}/{write.name}: a status patch must be a JSON object")
    status = o.merge_patch(obj.get("status") or {}, patch)
    if status == (obj.get("status") or {}):
        return None
    out = copy.copy(obj)
    out["status"] = status
    return out


def annotation_change(obj: Obj, write: m.ObjectWrite) -> Obj | None:
    """The object with the write's annotations set or removed; None if unchanged or not the target."""
    if not is_target(obj, write):
        return None
    return o.set_annotations(obj, write.annotations)


def wanted_object(write: m.ObjectWrite) -> Obj:
    """The object a create asks for, namespaced and named as the write says."""
    obj = payload(write)
    if not isinstance(obj, dict):
        raise ValueError(f"{write.kind}/{write.namespace}/{write.name}: create needs the object as a JSON object")
    obj = copy.deepcopy(obj)
    obj["kind"] = write.kind
    meta = o.meta(obj)
    meta["name"], meta["namespace"] = write.name, write.namespace
    return obj


def same_object(existing: Obj, wanted: Obj) -> bool:
    """An existing object is the one a create asks for (so the create was a redelivery, or a restarted
    scheduler deciding it again) when it carries the wanted labels and the same owners; without
    owners, the same spec. Owners rather than spec when there are some: an API server may have
    filled in defaults, and an object owned by the same uid under the same name can only be it.
    """
    em, wm = existing.get("metadata") or {}, wanted.get("metadata") or {}
    labels = em.get("labels") or {}
    if any(labels.get(k) != v for k, v in (wm.get("labels") or {}).items()):
        return False
    if wm.get("ownerReferences"):
        return _owner_uids(em) == _owner_uids(wm)
    return bool(existing.get("spec") == wanted.get("spec"))


def _owner_uids(meta: dict[str, Any]) -> list[str]:
    return sorted(str(r.get("uid")) for r in meta.get("ownerReferences") or [])


def event_of(write: m.ObjectWrite) -> KubeEvent:
    """The Event an `event` write asks for: reason from the write, type and message from its object."""
    body = payload(write)
    if not isinstance(body, dict) or body.get("type") not in (NORMAL, WARNING) or not write.reason:
        raise ValueError(
            f"{write.kind}/{write.namespace}/{write.name}: an event write needs a reason and "
            f'{{"type": "Normal"|"Warning", "message": ...}}'
        )
    return KubeEvent(str(body["type"]), write.reason, str(body.get("message", "")))


def involved(write: m.ObjectWrite) -> Obj:
    """The object an event write is about, as much of it as an Event's involvedObject needs."""
    return {
        "apiVersion": API_VERSION,
        "kind": write.kind,
        "metadata": {"name": write.name, "namespace": write.namespace, "uid": write.uid},
    }


def local_event_name(about: Obj, reason: str) -> str:
    """Local mode keeps one Event per (object, reason), as `kubectl describe` aggregates repeats."""
    meta = o.meta(about)
    return f"{meta.get('name')}.{str(about.get('kind')).lower()}.{reason.lower()}"


def local_event(existing: Obj | None, about: Obj, event: KubeEvent, now: str) -> Obj:
    """A core/v1 Event for the local object store: a repeat of the same reason on the same object
    (same uid) bumps `count` and takes the newest message, so an object keeps a bounded set.
    """
    meta = o.meta(about)
    same = existing is not None and (existing.get("involvedObject") or {}).get("uid") == meta.get("uid")
    first = existing.get("firstTimestamp", now) if same and existing else now
    count = int(existing.get("count", 0)) + 1 if same and existing else 1
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": local_event_name(about, event.reason), "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": about.get("apiVersion", API_VERSION),
            "kind": about.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "reason": event.reason,
        "message": event.message,
        "type": event.type,
        "source": {"component": "chaosbus-recorder"},
        "firstTimestamp": first,
        "lastTimestamp": now,
        "count": count,
    }


def spawned_event(owner_kind: str, child_kind: str, child_name: str) -> KubeEvent | None:
    """Chaos Mesh's Event on the owner of a child that was just created (None: it records none)."""
    if owner_kind == "Schedule":
        return KubeEvent(NORMAL, "Spawned", f"Create new object: {child_name}")
    if owner_kind == "WorkflowNode" and child_kind == "StatusCheck":
        return KubeEvent(NORMAL, "StatusCheckCreated", f"status check {child_name} created")
    if owner_kind == "WorkflowNode" and child_kind != "WorkflowNode":
        return KubeEvent(NORMAL, "ChaosCRCreated", f"chaos CR {child_name} created")
    return None
