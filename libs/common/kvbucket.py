"""A KV bucket as the subject table declares it: values go in and come out as the msgspec Struct its
key's pattern names (or as bytes, for a bucket declared free-form), so no caller encodes, decodes or
reaches nats-py's KeyValue. A value that does not decode is logged and skipped, never fatal; a put
of another type, or under a key the table does not cover, is refused before anything is sent.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from chaosbus.common import kvsnapshot, natsclient, subjects
from chaosbus.common.tcpnats import tcp_only

with tcp_only():
    from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
    from nats.js.kv import KeyValue
from chaosbus.common import logging as cblog
from chaosbus.common.wire import decode, encode

V = TypeVar("V")
T = TypeVar("T")
log = cblog.get("bus")
Seal = Callable[[bytes], bytes]
WRONG_LAST_CODES = (10071, 10164)  # JetStream's "wrong last sequence" error codes
WRITE_WAIT_S = 5.0  # nats-py's default for a JetStream request: the bound of a write, repeats included


class WrongRevision(RuntimeError):
    """A compare-and-set lost: the key was not at the revision given (or, for create, existed)."""


@dataclass(frozen=True)
class KvEntry:
    """One change of a KV key as a follower sees it, as stored; `deleted` for a delete or purge."""

    key: str
    value: bytes
    revision: int
    deleted: bool


@dataclass(frozen=True)
class Stored(Generic[V]):
    """A key's value with its revision (what a compare-and-set compares). `value` is None for a
    deleted key and for one that did not decode (logged); `data` is what is stored, byte for byte:
    a sealed key's envelope, for the reader that checks its signature.
    """

    key: str
    value: V | None
    revision: int
    data: bytes = b""
    deleted: bool = False


Follower = Callable[[str, str], AsyncIterator[KvEntry | None]]


class TypedBucket(Generic[V]):
    """get / entry / put / create / update / delete / purge / list / follow over one bucket."""

    def __init__(self, entry: subjects.Bucket[V], kv: KeyValue, follower: Follower) -> None:
        self.entry, self.kv, self._follower = entry, kv, follower

    @property
    def name(self) -> str:
        return self.entry.name

    def encode(self, key: str, value: V, seal: Seal | None = None) -> bytes:
        """`value` as stored under `key`; TypeError for a type the table does not give that key,
        ValueError for a key no pattern of the bucket covers. `seal` wraps it (a signed envelope).
        """
        keys = self._keys(key)
        if type(value) is not keys.value:
            raise TypeError(
                f"{self.name}/{key} holds {keys.value.__name__}, not {type(value).__name__} (the subject table)"
            )
        data = value if isinstance(value, bytes) else encode(value)  # type: ignore[arg-type]
        return data if seal is None else seal(data)

    def decode(self, key: str, data: bytes) -> V | None:
        """What is stored under `key` as the table's type, None (logged) when it does not decode."""
        keys = self.entry.keys_of(key)
        if keys is None:
            log.warning("KV key outside the subject table skipped", bucket=self.name, key=key)
            return None
        if keys.value is bytes:
            return data  # type: ignore[return-value]
        if keys.sealed:
            # here, not at import: a reader of unsigned buckets (`chaosbus get`) skips cryptography
            from chaosbus.common import signing

            data = signing.peek(data)
        try:
            value: V = decode(data, keys.value)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as e:
            log.error("malformed KV value skipped", bucket=self.name, key=key, error=str(e)[:500])
            return None
        return value

    def _keys(self, key: str) -> subjects.Keys[Any]:
        keys = self.entry.keys_of(key)
        if keys is None:
            raise ValueError(f"{key!r} is no key of the {self.name} bucket in the subject table")
        return keys

    async def entry_of(self, key: str) -> Stored[V] | None:
        """The key's value and revision; a deleted key keeps the revision of its delete marker (a
        compare-and-set goes on from it); None for a key never written (or purged).
        """
        try:
            got = await self.kv.get(key)
        except KeyNotFoundError as e:
            marker = getattr(e, "entry", None)
            revision = getattr(marker, "revision", None)
            return None if revision is None else Stored(key, None, revision, deleted=True)
        data = got.value or b""
        if not data:
            return Stored(key, None, got.revision or 0, deleted=True)
        return Stored(key, self.decode(key, data), got.revision or 0, data)

    async def get(self, key: str) -> V | None:
        """The key's value; None when there is none or it does not decode (logged)."""
        found = await self.entry_of(key)
        return None if found is None else found.value

    async def put(self, key: str, value: V, *, seal: Seal | None = None) -> int:
        """Store `value` under `key`; the revision it got."""
        data = self.encode(key, value, seal)
        return int(await self._written(lambda: self.kv.put(key, data)))

    async def create(self, key: str, value: V, *, seal: Seal | None = None) -> int:
        """Store `value` only if `key` has none (WrongRevision otherwise)."""
        data = self.encode(key, value, seal)
        tries = _Tries(lambda: self.kv.create(key, data))
        try:
            return int(await self._written(tries))
        except KeyWrongLastSequenceError:
            revision = await self._landed(key, data, tries)
            if revision is None:
                raise WrongRevision(f"{self.name}/{key} exists") from None
            return revision

    async def update(self, key: str, value: V, *, last: int, seal: Seal | None = None) -> int:
        """Store `value` only if `key` is still at revision `last` (WrongRevision otherwise)."""
        data = self.encode(key, value, seal)
        tries = _Tries(lambda: self.kv.update(key, data, last=last))
        try:
            return int(await self._written(tries))
        except KeyWrongLastSequenceError:
            revision = await self._landed(key, data, tries)
            if revision is None:
                raise WrongRevision(f"{self.name}/{key} is past revision {last}") from None
            return revision

    async def delete(self, key: str, *, last: int | None = None) -> None:
        """Delete `key` (a marker stays, with its revision); with `last`, only at that revision. A
        key the table does not cover may go too: removing one (a newer writer's) is always safe.
        """
        tries = _Tries(lambda: self.kv.delete(key, last=last))
        try:
            await self._written(tries)
        except BadRequestError as e:
            # nats-py's delete leaves JetStream's "wrong last sequence" as the bare API error
            if e.err_code not in WRONG_LAST_CODES:
                raise
            if tries.count > 1:
                found = await self.entry_of(key)
                if found is None or found.deleted:
                    return  # the try lost with its connection deleted it
            raise WrongRevision(f"{self.name}/{key} is past revision {last}") from None

    async def purge(self, key: str) -> None:
        """Remove `key` and its history, leaving only a purge marker (any key, as `delete`)."""
        await self._written(lambda: self.kv.purge(key))

    async def _written(self, write: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """`write()`, made again on the next connection when the one it went out on is lost before
        its answer (nats-server killed: the answer never comes, and nats-py waited out 5 s for it);
        WRITE_WAIT_S in all. A put, delete or purge made twice leaves what one leaves; a
        compare-and-set made twice loses to itself, which its caller checks (`_landed`).
        """
        nc = self.kv._js._nc  # nats-py keeps the bucket's connection private
        deadline = time.monotonic() + WRITE_WAIT_S
        while True:
            await natsclient.until_connected(nc, deadline)
            try:
                return await natsclient.unless_lost(nc, write())
            except natsclient.ConnectionLost:
                log.info("NATS connection lost before a KV write was acknowledged; writing again", bucket=self.name)

    async def _landed(self, key: str, data: bytes, tries: _Tries[Any]) -> int | None:
        """The revision of `data` under `key` when a compare-and-set that lost was a repeat and the
        key holds exactly what it wrote: the try lost with its connection had stored it."""
        if tries.count < 2:
            return None
        found = await self.entry_of(key)
        return found.revision if found is not None and found.data == data else None

    async def list(self, keys: str = ">") -> builtins.list[Stored[V]]:
        """Every live key matching `keys` now, in the bucket's order (undecodable ones skipped)."""
        out: builtins.list[Stored[V]] = []
        for key, data, revision in await kvsnapshot.snapshot(self.kv, keys):
            value = self.decode(key, data) if data else None
            if value is not None:
                out.append(Stored(key, value, revision, data))
        return out

    async def keys(self, keys: str = ">") -> builtins.list[str]:
        """Every live key matching `keys` now, whatever its value (one that does not decode too)."""
        return [key for key, data, _ in await kvsnapshot.snapshot(self.kv, keys) if data]

    async def follow(self, keys: str = ">") -> AsyncIterator[Stored[V] | None]:
        """The current value of every key matching `keys`, then each change, forever; None once the
        first snapshot is complete. A delete comes as `deleted`; an undecodable value is skipped.
        """
        async for change in self._follower(self.name, keys):
            if change is None:
                yield None
            elif change.deleted:
                yield Stored(change.key, None, change.revision, deleted=True)
            elif (value := self.decode(change.key, change.value)) is not None:
                yield Stored(change.key, value, change.revision, change.value)


class _Tries(Generic[T]):
    """A write, counting how often it was made."""

    def __init__(self, write: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self.write, self.count = write, 0

    def __call__(self) -> Coroutine[Any, Any, T]:
        self.count += 1
        return self.write()
