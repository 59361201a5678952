"""Where the recorder's Events go, injected like its object store: local mode keeps them in the
object store itself (one per object and reason, repeats counted, deleted with the object), cluster
mode writes core/v1 Events through the API (`kube.KubeEvents`; the API server expires them).
Which Events a change deserves is decided once, for both, in `events.py`.
"""

from __future__ import annotations

from typing import Any, Protocol

from chaosbus.common.objects import now_rfc3339
from chaosbus.common.store import Conflict, NotFound, ObjectStore
from chaosbus.recorder import writes
from chaosbus.recorder.events import KubeEvent

Obj = dict[str, Any]


class EventSink(Protocol):
    async def record(self, about: Obj, event: KubeEvent) -> None:
        """Record one Event about an object; best effort, never blocking a status write."""

    async def forget(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """An object is gone: its Events may go too."""

    async def sweep(self, gone: set[tuple[str, str]]) -> None:
        """The Events of objects (namespace, uid) deleted while no recorder ran, in one pass."""


class StoreEvents:
    """Events as objects of kind Event in local mode's object store, where `chaosbus describe`
    finds them by their involved object's uid.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    async def record(self, about: Obj, event: KubeEvent) -> None:
        ns = str((about.get("metadata") or {}).get("namespace"))
        name, now = writes.local_event_name(about, event.reason), now_rfc3339()
        for _ in range(3):
            try:
                await self.store.mutate("Event", ns, name, lambda old: writes.local_event(old, about, event, now))
                return
            except NotFound:
                try:
                    await self.store.create(writes.local_event(None, about, event, now))
                    return
                except Conflict:
                    continue

    async def forget(self, kind: str, namespace: str, name: str, uid: str) -> None:
        about = {"kind": kind, "metadata": {"name": name}}
        for ev in await self.store.list("Event", namespace, names=writes.local_event_name(about, "*")):
            if (ev.get("involvedObject") or {}).get("uid") == uid:
                await self.store.delete("Event", namespace, str(ev["metadata"]["name"]))

    async def sweep(self, gone: set[tuple[str, str]]) -> None:
        for ev in await self.store.list("Event"):
            meta = ev.get("metadata") or {}
            if (meta.get("namespace"), (ev.get("involvedObject") or {}).get("uid")) in gone:
                await self.store.delete("Event", str(meta.get("namespace")), str(meta.get("name")))
