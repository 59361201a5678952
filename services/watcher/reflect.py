"""Pure list+watch bookkeeping for the watcher's Kubernetes edge (a reflector without I/O), and the
projection scope (single namespace, `chaos-mesh.org/inject: enabled` filter) in front of WatcherCore.

`Reflector` remembers, per watched resource, the resourceVersion of every object it has passed on,
so a relist (after 410 Expired or an API server restart) yields only what really changed: new or
changed objects as puts, vanished ones as deletes, unchanged ones not at all. Nothing is missed and
no experiment is replayed. Watch events older than what was already seen are dropped the same way.

`ScopedCore` wraps the pure WatcherCore with the controller settings Chaos Mesh calls
CLUSTER_SCOPED / TARGET_NAMESPACE / ENABLE_FILTER_NAMESPACE: pods outside the scope are never
projected, and when a namespace gains or loses the inject annotation its pods are projected or
withdrawn. Chaos objects are not filtered (Chaos Mesh applies the filter to target selection only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chaosbus.common import subjects
from chaosbus.common.crd.meta import INJECT_ANNOTATION
from chaosbus.watcher.core import Outputs, WatcherCore

Obj = dict[str, Any]


def object_key(obj: Obj) -> str:
    """The key local mode's object store uses, so both modes feed the core identical keys."""
    meta = obj.get("metadata") or {}
    return subjects.object_key(str(obj.get("kind", "")), str(meta.get("namespace") or ""), str(meta.get("name", "")))


def version_of(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass
class Change:
    key: str
    obj: Obj | None  # None: deleted
    revision: int


@dataclass
class Reflector:
    """One watched resource's known objects: key -> resourceVersion."""

    kind: str
    known: dict[str, int] = field(default_factory=dict)

    def on_list(self, items: list[Obj], list_version: int) -> list[Change]:
        """A full list: changes relative to what was known (puts for new or changed, deletes for gone)."""
        changes = []
        seen = set()
        for item in items:
            item = {**item, "kind": item.get("kind") or self.kind}
            key, rv = object_key(item), version_of(item)
            seen.add(key)
            if self.known.get(key) != rv:
                self.known[key] = rv
                changes.append(Change(key, item, rv))
        for key in sorted(set(self.known) - seen):
            del self.known[key]
            changes.append(Change(key, None, list_version))
        return changes

    def on_event(self, kind_of_event: str, obj: Obj) -> Change | None:
        """One watch event (ADDED / MODIFIED / DELETED); None when nothing new."""
        obj = {**obj, "kind": obj.get("kind") or self.kind}
        key, rv = object_key(obj), version_of(obj)
        if kind_of_event == "DELETED":
            if self.known.pop(key, None) is None:
                return None
            return Change(key, None, rv)
        if self.known.get(key, -1) >= rv:
            return None
        self.known[key] = rv
        return Change(key, obj, rv)


@dataclass(frozen=True)
class Scope:
    cluster_scoped: bool = True
    target_namespace: str = ""
    enable_filter_namespace: bool = False

    def namespace_in_scope(self, namespace: str) -> bool:
        return self.cluster_scoped or namespace == self.target_namespace


class ScopedCore:
    """WatcherCore behind the namespace scope and the inject-annotation filter."""

    def __init__(self, core: WatcherCore, scope: Scope) -> None:
        self.core, self.scope = core, scope
        self.pods: dict[str, dict[str, Obj]] = {}  # namespace -> key -> pod (every pod seen)
        self.enabled: dict[str, bool] = {}  # namespace -> carries chaos-mesh.org/inject: enabled

    def _allowed(self, namespace: str) -> bool:
        if not self.scope.namespace_in_scope(namespace):
            return False
        return not self.scope.enable_filter_namespace or self.enabled.get(namespace, False)

    def apply(self, change: Change) -> Outputs:
        kind = change.key.split(".", 1)[0]
        if kind == "Pod":
            return self._pod(change)
        out = self._put_or_delete(change)
        if kind == "Namespace":
            out = _merged(out, self._namespace(change))
        return out

    def _put_or_delete(self, change: Change) -> Outputs:
        if change.obj is None:
            return self.core.on_delete(change.key, change.revision)
        return self.core.on_put(change.key, change.obj, change.revision)

    def _pod(self, change: Change) -> Outputs:
        _, namespace, _ = change.key.split(".", 2)
        pods = self.pods.setdefault(namespace, {})
        if change.obj is None:
            pods.pop(change.key, None)
            return self.core.on_delete(change.key, change.revision)
        pods[change.key] = change.obj
        if self._allowed(namespace):
            return self.core.on_put(change.key, change.obj, change.revision)
        return self.core.on_delete(change.key, change.revision)  # withdrawn if it was projected

    def _namespace(self, change: Change) -> Outputs:
        name = change.key.split(".", 2)[2]
        annotations = ((change.obj or {}).get("metadata") or {}).get("annotations") or {}
        was = self._allowed(name)
        self.enabled[name] = change.obj is not None and annotations.get(INJECT_ANNOTATION) == "enabled"
        now = self._allowed(name)
        out = Outputs()
        if was == now or not self.scope.enable_filter_namespace:
            return out
        for key, pod in sorted(self.pods.get(name, {}).items()):
            step = self.core.on_put(key, pod, change.revision) if now else self.core.on_delete(key, change.revision)
            out = _merged(out, step)
        return out


def _merged(a: Outputs, b: Outputs) -> Outputs:
    return Outputs(
        events=a.events + b.events,
        target_puts=a.target_puts + b.target_puts,
        target_deletes=a.target_deletes + b.target_deletes,
    )
