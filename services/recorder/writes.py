"""The recorder's pure rules for ObjectWrite messages (objects the scheduler decides: Schedule
children, orchestration status): what a status merge patch or an annotation change does to a
stored object, and when an existing object already is the child a create asks for.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from chaosbus.common import messages as m
from chaosbus.common import objects as o

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
