"""Pure watcher logic: an object store change becomes object events for chaos kinds (executed or
only accepted, so the recorder can say so) and target
projection updates for Pods, Namespaces and Nodes. No I/O; the app feeds it and publishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from chaosbus.common import messages as m
from chaosbus.common import subjects
from chaosbus.common.crd import CHAOS_KINDS, NOT_EXECUTED, ORCHESTRATED

Obj = dict[str, Any]


@dataclass
class Outputs:
    events: list[tuple[str, m.ObjectEvent, str]] = field(default_factory=list)  # subject, event, msg id
    target_puts: list[tuple[str, m.TargetPod | m.TargetNamespace | m.TargetNode]] = field(default_factory=list)
    target_deletes: list[str] = field(default_factory=list)


def project_pod(pod: Obj) -> m.TargetPod:
    """The fields of a Kubernetes Pod that selection and injection need."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    statuses = {s.get("name"): s for s in status.get("containerStatuses") or []}
    containers = [
        m.ContainerRef(
            name=c.get("name", ""),
            container_id=statuses.get(c.get("name"), {}).get("containerID", ""),
            ready=bool(statuses.get(c.get("name"), {}).get("ready", False)),
            restart_count=int(statuses.get(c.get("name"), {}).get("restartCount", 0)),
        )
        for c in spec.get("containers") or []
    ]
    return m.TargetPod(
        uid=meta.get("uid", ""),
        namespace=meta.get("namespace", "default"),
        name=meta.get("name", ""),
        labels=meta.get("labels") or {},
        annotations=meta.get("annotations") or {},
        node=spec.get("nodeName", ""),
        pod_ip=status.get("podIP", ""),
        phase=status.get("phase", "Pending"),
        host_network=bool(spec.get("hostNetwork", False)),
        restart_policy=spec.get("restartPolicy", "Always"),
        scheduler_name=spec.get("schedulerName", "default-scheduler"),
        service_account=spec.get("serviceAccountName", "default"),
        nominated_node=status.get("nominatedNodeName", ""),
        containers=containers,
        deleting=bool(meta.get("deletionTimestamp")),
    )


def project_namespace(obj: Obj) -> m.TargetNamespace:
    meta = obj.get("metadata") or {}
    return m.TargetNamespace(
        name=meta.get("name", ""), labels=meta.get("labels") or {}, annotations=meta.get("annotations") or {}
    )


def project_node(obj: Obj) -> m.TargetNode:
    meta = obj.get("metadata") or {}
    return m.TargetNode(name=meta.get("name", ""), labels=meta.get("labels") or {})


class WatcherCore:
    """Remembers the last object per key so a deletion can be described."""

    def __init__(self) -> None:
        self.seen: dict[str, Obj] = {}

    def on_put(self, key: str, obj: Obj, revision: int) -> Outputs:
        kind = str(obj.get("kind", ""))
        before = self.seen.get(key)
        self.seen[key] = obj
        out = Outputs()
        if kind in CHAOS_KINDS or kind in NOT_EXECUTED or kind in ORCHESTRATED:
            if before is not None and status_only(before, obj):
                out.events.append(_event("MODIFIED", obj, revision, status=True))
            else:
                out.events.append(_event("ADDED" if before is None else "MODIFIED", obj, revision))
        else:
            projected = _project(kind, obj)
            if projected is not None:
                out.target_puts.append(projected)
        return out

    def on_delete(self, key: str, revision: int) -> Outputs:
        obj = self.seen.pop(key, None)
        out = Outputs()
        if obj is None:
            return out
        kind = str(obj.get("kind", ""))
        if kind in CHAOS_KINDS or kind in NOT_EXECUTED or kind in ORCHESTRATED:
            out.events.append(_status_tombstone(obj, revision))
            out.events.append(_event("DELETED", obj, revision))
        else:
            projected = _project(kind, obj)
            if projected is not None:
                out.target_deletes.append(projected[0])
        return out


def _project(kind: str, obj: Obj) -> tuple[str, m.TargetPod | m.TargetNamespace | m.TargetNode] | None:
    meta = obj.get("metadata") or {}
    if kind == "Pod":
        pod = project_pod(obj)
        return subjects.target_pod_key(pod.namespace, pod.name), pod
    if kind == "Namespace":
        return subjects.target_namespace_key(meta.get("name", "")), project_namespace(obj)
    if kind == "Node":
        return subjects.target_node_key(meta.get("name", "")), project_node(obj)
    return None


# Fields the API server changes on every write, status writes included.
_SERVER_FIELDS = ("resourceVersion", "managedFields")


def status_only(before: Obj, after: Obj) -> bool:
    """Whether `after` differs from `before` in its status alone (and the fields the API server
    bumps on any write): a recorder's or scheduler's status write, which only readers of status want.
    """
    if before.get("status") == after.get("status"):
        return False
    keys = (set(before) | set(after)) - {"status", "metadata"}
    if any(before.get(k) != after.get(k) for k in keys):
        return False
    old, new = before.get("metadata") or {}, after.get("metadata") or {}
    return all(old.get(k) == new.get(k) for k in (set(old) | set(new)) - set(_SERVER_FIELDS))


def _event(kind_of_change: str, obj: Obj, revision: int, *, status: bool = False) -> tuple[str, m.ObjectEvent, str]:
    meta = obj.get("metadata") or {}
    uid = str(meta.get("uid", ""))
    event = m.ObjectEvent(
        type=kind_of_change,  # type: ignore[arg-type]
        kind=str(obj.get("kind")),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=uid,
        generation=int(meta.get("generation", 0)),
        resource_version=str(revision),
        object=msgspec.Raw(msgspec.json.encode(obj)),
        status_only=status,
    )
    where = subjects.status_subject if status else subjects.object_subject
    return (
        where(event.kind, event.namespace, event.name),
        event,
        f"{uid}.{revision}.{kind_of_change}" + (".status" if status else ""),
    )


def _status_tombstone(obj: Obj, revision: int) -> tuple[str, m.ObjectEvent, str]:
    """Replaces a deleted object's last status event (the stream keeps one per subject) with its
    identity alone, so a status of up to 250 KB is not kept for an object that is gone.
    """
    meta = obj.get("metadata") or {}
    identity = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid") if k in meta},
    }
    return _event("DELETED", identity, revision, status=True)


def stale_deletion(last: m.ObjectEvent) -> list[tuple[str, m.ObjectEvent, str]]:
    """The DELETED events (status tombstone, then the deletion) for an object whose last event
    said it exists, found gone on relist.
    """
    obj = msgspec.json.decode(last.object)
    if not isinstance(obj, dict):
        obj = {"kind": last.kind, "metadata": {"namespace": last.namespace, "name": last.name, "uid": last.uid}}
    try:
        revision = int(last.resource_version or 0)
    except ValueError:
        revision = 0
    return [_status_tombstone(obj, revision), _event("DELETED", obj, revision)]
