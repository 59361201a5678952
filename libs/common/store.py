"""Local mode's object store: Kubernetes-shaped objects in the NATS KV bucket `objects`, with
compare-and-set writes so concurrent writers (CLI, recorder, pod supervisors) never lose an update.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from chaosbus.common import objects as o
from chaosbus.common import subjects
from chaosbus.common.crd import CHAOS_KINDS, InvalidObject
from chaosbus.common.kvbucket import TypedBucket, WrongRevision

Obj = dict[str, Any]
Mutation = Callable[[Obj], Obj | None]


class NotFound(LookupError):
    pass


class Conflict(RuntimeError):
    pass


class Refused(ValueError):
    """The store answered a write with a refusal asking again would not change (the Kubernetes API's
    400, 403 or 422): the write is given up, never retried."""


class Objects(Protocol):
    """What a service needs of the place objects live, whichever it is: local mode's KV bucket
    (`ObjectStore`) or the Kubernetes API (the recorder's `KubeStore`). Injected, so one service
    code path serves both modes.
    """

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """The object, or None when there is none."""

    async def create(self, obj: Obj) -> Obj:
        """Store a new object; Conflict if it exists, ValueError if it is refused for good."""

    async def delete(self, kind: str, namespace: str, name: str, *, uid: str = "") -> str:
        """deleted | deleting (finalizers pending) | notfound; `uid`: only that object."""

    async def mutate(self, kind: str, namespace: str, name: str, fn: Mutation) -> Obj | None:
        """Read-modify-write: `fn` returns the new object or None (no change), recomputed on the
        fresh object after a conflicting write; NotFound when there is no object.
        """


def key_of(obj: Obj) -> str:
    m = obj.get("metadata") or {}
    ns = "" if obj.get("kind") in o.CLUSTER_SCOPED else (m.get("namespace") or "default")
    return subjects.object_key(str(obj.get("kind")), ns, str(m.get("name")))


class ObjectStore:
    """get / list / apply / mutate / delete over KV, with resourceVersion = KV revision."""

    def __init__(self, kv: TypedBucket[bytes]) -> None:
        self.kv = kv

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        found = await self._get(subjects.object_key(kind, namespace, name))
        return found[0] if found else None

    async def _get(self, key: str) -> tuple[Obj, int] | None:
        entry = await self.kv.entry_of(key)
        if entry is None or entry.value is None:
            return None
        return _with_version(msgspec.json.decode(entry.value), entry.revision), entry.revision

    async def list(self, kind: str | None = None, namespace: str | None = None, *, names: str = ">") -> list[Obj]:
        """Current objects, optionally of one kind and namespace, in key order (one KV watch).
        `names` narrows a namespace's listing to a subject pattern over the name's tokens.
        """
        pattern = f"{kind or '*'}.{namespace}.{names}" if namespace else (f"{kind}.>" if kind else ">")
        found = {s.key: _with_version(msgspec.json.decode(s.data), s.revision) for s in await self.kv.list(pattern)}
        return [found[k] for k in sorted(found)]

    async def create(self, obj: Obj) -> Obj:
        stored = o.prepare_create(obj, uid=str(uuid.uuid4()), now=o.now_rfc3339())
        try:
            rev = await self.kv.create(key_of(stored), _encode(stored))
        except WrongRevision:
            raise Conflict(f"{key_of(obj)} already exists") from None
        return _with_version(stored, rev)

    async def apply(self, obj: Obj, *, immutable_spec: bool) -> tuple[Obj, str]:
        """Create or update; returns the stored object and created | configured | unchanged."""
        m = obj.get("metadata") or {}
        ns = "" if obj.get("kind") in o.CLUSTER_SCOPED else (m.get("namespace") or "default")
        for attempt in range(20):
            # A new object is created without reading first (one round trip, not two: most of what
            # an apply of a new experiment waits for before the watcher sees it); one that exists
            # refuses the create, and is then read and updated.
            current = await self._get(key_of(obj)) if attempt else None
            if current is None:
                try:
                    return await self.create(obj), "created"
                except Conflict:
                    continue
            old, rev = current
            new = o.prepare_update(_strip_version(old), obj, immutable_spec=immutable_spec)
            if new is None:
                return old, "unchanged"
            try:
                rev = await self.kv.update(key_of(obj), _encode(new), last=rev)
            except WrongRevision:
                continue
            return _with_version(new, rev), "configured"
        raise Conflict(f"{obj.get('kind')}/{ns}/{m.get('name')}: too many concurrent writers")

    async def apply_admitted(self, obj: Obj) -> tuple[Obj, str]:
        """`apply` of an object from admission.admit, as `chaosbus apply` does it: experiment specs
        are immutable (a change is an InvalidObject naming `spec`).
        """
        try:
            return await self.apply(obj, immutable_spec=obj["kind"] in CHAOS_KINDS)
        except o.ImmutableSpec as e:
            raise InvalidObject([f"{obj['kind']}/{obj['metadata']['name']}: {e}"]) from None

    async def mutate(self, kind: str, namespace: str, name: str, fn: Mutation) -> Obj | None:
        """Read-modify-write with CAS retries. `fn` returns the new object, or None for no change.
        A deleting object whose finalizers are all gone is removed, as the API server does.
        """
        key = subjects.object_key(kind, namespace, name)
        for _ in range(50):
            current = await self._get(key)
            if current is None:
                raise NotFound(key)
            old, rev = current
            new = fn(_strip_version(old))
            if new is None:
                return old
            try:
                if o.ready_to_vanish(new):
                    await self.kv.delete(key, last=rev)
                    return None
                rev = await self.kv.update(key, _encode(new), last=rev)
            except WrongRevision:
                continue
            return _with_version(new, rev)
        raise Conflict(f"{key}: too many concurrent writers")

    async def delete(self, kind: str, namespace: str, name: str, *, uid: str = "") -> str:
        """Returns deleted | deleting (finalizers pending) | notfound. With `uid`, only that object
        is deleted (a same-named successor counts as notfound), as a Kubernetes uid precondition.
        """
        now = o.now_rfc3339()
        other = False

        def deleted_or_marked(obj: Obj) -> Obj | None:
            nonlocal other
            other = bool(uid) and o.meta(obj).get("uid") != uid
            return None if other else _deleted_or_marked(obj, now)

        try:
            result = await self.mutate(kind, namespace, name, deleted_or_marked)
        except NotFound:
            return "notfound"
        return "notfound" if other else "deleted" if result is None else "deleting"


def _deleted_or_marked(obj: Obj, now: str) -> Obj | None:
    marked = o.mark_deleting(obj, now=now)
    if marked is None:  # no finalizers: remove outright
        gone = dict(obj)
        gone["metadata"] = {**o.meta(obj), "deletionTimestamp": now, "finalizers": []}
        return gone
    return marked if marked is not obj else None


def _encode(obj: Obj) -> bytes:
    return msgspec.json.encode(_strip_version(obj))


def _with_version(obj: Obj, rev: int) -> Obj:
    o.meta(obj)["resourceVersion"] = str(rev)
    return obj


def _strip_version(obj: Obj) -> Obj:
    m = obj.get("metadata")
    if isinstance(m, dict) and "resourceVersion" in m:
        obj = {**obj, "metadata": {k: v for k, v in m.items() if k != "resourceVersion"}}
    return obj
