"""Pure object-lifecycle rules of local mode's object store, mirroring the Kubernetes API server:
uid, creationTimestamp, generation bumps on spec change, immutable experiment specs, deletion that
waits for finalizers.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from chaosbus.common.crd import kinds

Obj = dict[str, Any]

# The Kubernetes kinds local mode keeps besides chaos-mesh.org's (crd.kinds names those): kind ->
# lower-case names.
CORE_KINDS: dict[str, tuple[str, ...]] = {
    "Pod": ("pod", "pods", "po"),
    "Namespace": ("namespace", "namespaces", "ns"),
    "Node": ("node", "nodes", "no"),
    "ConfigMap": ("configmap", "configmaps", "cm"),  # StatusCheck templates only (crd/sctemplates.py)
}
CLUSTER_SCOPED = ("Namespace", "Node")


def canonical_kind(text: str) -> str | None:
    """Accept `NetworkChaos`, `networkchaos`, `nwc`, `networkchaos.chaos-mesh.org`, `pods`, ..."""
    found = kinds.by_name(text)
    if found is not None:
        return found.kind
    t = text.split(".", 1)[0].lower()
    return next((kind for kind, names in CORE_KINDS.items() if t in names), None)


def known_names() -> list[str]:
    """The name of every kind the CLI knows, for messages."""
    return [*(k.lower() for k in kinds.KINDS), *(names[0] for names in CORE_KINDS.values())]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339(ts: float) -> str:
    """A Unix time the way Kubernetes spells timestamps (UTC, whole seconds)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def meta(obj: Obj) -> dict[str, Any]:
    m = obj.setdefault("metadata", {})
    assert isinstance(m, dict)
    return m


def prepare_create(obj: Obj, *, uid: str, now: str) -> Obj:
    """A new object as the API server stores it: server-set fields filled, client status dropped."""
    out = copy.deepcopy(obj)
    m = meta(out)
    m["uid"] = uid
    m["creationTimestamp"] = now
    m["generation"] = 1
    for server_field in ("resourceVersion", "deletionTimestamp"):
        m.pop(server_field, None)
    if out.get("kind") not in ("Pod",):
        out.pop("status", None)
    return out


class ImmutableSpec(ValueError):
    pass


def prepare_update(old: Obj, new: Obj, *, immutable_spec: bool) -> Obj | None:
    """Apply `new` over `old` like `kubectl apply`: labels and annotations merge, server fields and
    status stay, a spec change bumps generation (or is refused for experiments). None = unchanged.
    """
    out = copy.deepcopy(old)
    om, nm = meta(out), new.get("metadata") or {}
    spec_changed = "spec" in new and new["spec"] != old.get("spec")
    if spec_changed and immutable_spec:
        raise ImmutableSpec("spec: Cannot update chaos spec (experiments are immutable: delete and re-create)")
    for field in ("labels", "annotations"):
        merged = {**om.get(field, {}), **(nm.get(field) or {})}
        if merged:
            om[field] = merged
    if spec_changed:
        out["spec"] = copy.deepcopy(new["spec"])
        om["generation"] = int(om.get("generation", 1)) + 1
    return None if out == old else out


def set_annotations(obj: Obj, changes: dict[str, str | None]) -> Obj | None:
    """`kubectl annotate`: value None removes the key. None = unchanged."""
    out = copy.deepcopy(obj)
    ann = dict(meta(out).get("annotations") or {})
    for key, value in changes.items():
        if value is None:
            ann.pop(key, None)
        else:
            ann[key] = value
    meta(out)["annotations"] = ann
    if not ann:
        meta(out).pop("annotations")
    return None if out == obj else out


def mark_deleting(obj: Obj, *, now: str) -> Obj | None:
    """Deletion: with finalizers the object stays with deletionTimestamp set; None = remove it now."""
    if not meta(obj).get("finalizers"):
        return None
    if meta(obj).get("deletionTimestamp"):
        return obj
    out = copy.deepcopy(obj)
    meta(out)["deletionTimestamp"] = now
    return out


def is_deleting(obj: Obj) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def ready_to_vanish(obj: Obj) -> bool:
    """A deleting object with no finalizers left is gone for good."""
    return is_deleting(obj) and not meta(obj).get("finalizers")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out
