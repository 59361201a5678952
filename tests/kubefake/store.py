"""The fake API server's storage: objects, one resourceVersion counter shared by all kinds, a change
history that watches replay from, compaction (410 Expired), and live watch subscriptions.

Runs on one event loop; every write is synchronous, so a change is in the history and in every
subscriber's queue before the request that made it returns.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kubefake import selectors as sel
from kubefake.resources import BUILTINS, Resource

Obj = dict[str, Any]
Key = tuple[tuple[str, str, str], str, str]  # resource key, namespace, name


@dataclass
class Change:
    rv: int
    resource: tuple[str, str, str]
    type: str  # ADDED MODIFIED DELETED
    obj: Obj
    prev: Obj | None


@dataclass(eq=False)
class Subscription:
    resource: Resource
    namespace: str | None
    labels: list[sel.Requirement]
    fields: list[sel.Requirement]
    queue: asyncio.Queue[Obj | None] = field(default_factory=asyncio.Queue)
    last_rv: int = 0

    def event_for(self, change: Change) -> Obj | None:
        """The watch event this change produces for this subscription, if any."""
        if change.resource != self.resource.key:
            return None
        new_match = self._match(change.obj)
        if change.type == "DELETED":
            return _event("DELETED", change.obj) if new_match else None
        old_match = change.prev is not None and self._match(change.prev)
        if new_match:
            return _event("ADDED" if change.type == "ADDED" or not old_match else "MODIFIED", change.obj)
        if old_match and change.prev is not None:
            gone = copy.deepcopy(change.prev)
            gone["metadata"]["resourceVersion"] = str(change.rv)
            return _event("DELETED", gone)
        return None

    def _match(self, obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return sel.matches(obj, self.labels, self.fields)


def _event(kind: str, obj: Obj) -> Obj:
    return {"type": kind, "object": copy.deepcopy(obj)}


class Store:
    def __init__(self, *, first_rv: int = 100, max_history: int = 100_000) -> None:
        self.rv = first_rv
        self.resources: dict[tuple[str, str, str], Resource] = {r.key: r for r in BUILTINS}
        self.objects: dict[Key, Obj] = {}
        self.history: deque[Change] = deque()
        self.max_history = max_history
        self.watch_floor = first_rv  # a watch from an older resourceVersion gets 410
        self.storage_floor = first_rv  # an Exact list at an older resourceVersion gets 410
        self.subscriptions: set[Subscription] = set()

    # --- resources ----------------------------------------------------------------------------
    def resource(self, group: str, version: str, plural: str) -> Resource | None:
        return self.resources.get((group, version, plural))

    def register(self, res: Resource) -> None:
        self.resources[res.key] = res

    def unregister(self, res: Resource) -> None:
        self.resources.pop(res.key, None)
        for key in [k for k in self.objects if k[0] == res.key]:
            del self.objects[key]

    # --- reads --------------------------------------------------------------------------------
    def get(self, res: Resource, namespace: str, name: str) -> Obj | None:
        obj = self.objects.get((self._storage_key(res), namespace, name))
        return None if obj is None else self._view(res, obj)

    def list(
        self,
        res: Resource,
        namespace: str | None,
        labels: list[sel.Requirement],
        fields: list[sel.Requirement],
        *,
        at: int | None = None,
    ) -> list[Obj]:
        objs = (
            self._snapshot(res, at)
            if at is not None
            else [o for k, o in self.objects.items() if k[0] == self._storage_key(res)]
        )
        out = [
            self._view(res, o)
            for o in objs
            if (namespace is None or (o.get("metadata") or {}).get("namespace") == namespace)
        ]
        out = [o for o in out if sel.matches(o, labels, fields)]
        return sorted(out, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    def _snapshot(self, res: Resource, at: int) -> list[Obj]:
        """The resource's objects as they were at resourceVersion `at`, from the history."""
        state = {k: o for k, o in self.objects.items() if k[0] == self._storage_key(res)}
        for change in reversed(self.history):
            if change.rv <= at:
                break
            if change.resource != self._storage_key(res):
                continue
            meta = change.obj["metadata"]
            key = (change.resource, meta.get("namespace", ""), meta["name"])
            if change.prev is None or change.type == "ADDED":
                state.pop(key, None)
            else:
                state[key] = change.prev
        return list(state.values())

    # --- writes -------------------------------------------------------------------------------
    def commit(self, res: Resource, kind: str, obj: Obj, prev: Obj | None) -> Obj:
        """Store a real change under a new resourceVersion and notify watchers; returns the stored obj."""
        self.rv += 1
        stored = copy.deepcopy(obj)
        meta = stored["metadata"]
        meta["resourceVersion"] = str(self.rv)
        key = (self._storage_key(res), meta.get("namespace", ""), meta["name"])
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = stored
        change = Change(self.rv, key[0], kind, stored, prev)
        self.history.append(change)
        while len(self.history) > self.max_history:
            dropped = self.history.popleft()
            self.watch_floor = max(self.watch_floor, dropped.rv)
            self.storage_floor = max(self.storage_floor, dropped.rv)
        for sub in list(self.subscriptions):
            self._deliver(sub, change)
        return copy.deepcopy(stored)

    def compact(self, *, watch: bool = True, storage: bool = True, at: int | None = None) -> int:
        """Forget history up to `at` (default: now): watches/Exact lists from older versions get 410."""
        point = self.rv if at is None else at
        if watch:
            self.watch_floor = max(self.watch_floor, point)
        if storage:
            self.storage_floor = max(self.storage_floor, point)
        floor = min(self.watch_floor, self.storage_floor)
        while self.history and self.history[0].rv <= floor:
            self.history.popleft()
        return point

    # --- watches ------------------------------------------------------------------------------
    def subscribe(self, sub: Subscription, since: int | None) -> None:
        """Queue the replay (history after `since`, or synthetic ADDED for all when None), then
        register for live changes. Raises ValueError when `since` is older than the watch window.
        """
        if since is not None and since < self.watch_floor:
            raise ValueError(f"too old resource version: {since} ({self.watch_floor + 1})")
        res = sub.resource
        if since is None:
            for obj in self.list(res, sub.namespace, sub.labels, sub.fields):
                sub.queue.put_nowait(_event("ADDED", obj))
                sub.last_rv = max(sub.last_rv, int(obj["metadata"]["resourceVersion"]))
        else:
            sub.last_rv = since
            for change in self.history:
                if change.rv > since:
                    self._deliver(sub, change)
        sub.last_rv = max(sub.last_rv, since or 0)
        self.subscriptions.add(sub)

    def _deliver(self, sub: Subscription, change: Change) -> None:
        if change.resource != self._storage_key(sub.resource):
            return
        view = Change(
            change.rv,
            sub.resource.key,
            change.type,
            self._view(sub.resource, change.obj),
            None if change.prev is None else self._view(sub.resource, change.prev),
        )
        event = sub.event_for(view)
        if event is not None:
            sub.queue.put_nowait(event)

    def close_all(self) -> None:
        for sub in self.subscriptions:
            sub.queue.put_nowait(None)
        self.subscriptions.clear()

    # --- events.k8s.io/v1 and core/v1 Events are one stored object --------------------------
    def _storage_key(self, res: Resource) -> tuple[str, str, str]:
        return ("", "v1", "events") if res.key == ("events.k8s.io", "v1", "events") else res.key

    def _view(self, res: Resource, obj: Obj) -> Obj:
        if res.key == ("events.k8s.io", "v1", "events"):
            from kubefake.events import to_events_v1

            return to_events_v1(obj)
        return copy.deepcopy(obj)
