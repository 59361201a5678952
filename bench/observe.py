"""What the harness sees on the bus, off the critical path: every NodeCommand and ResultBatch (core
NATS subscriptions on the streams' subjects, so the services' consumers are untouched), every
write of a bench experiment's object (a KV watch): when its status first said all records
Injected, all Not Injected, and how many bytes the stored object had, and every object event the
watcher publishes about it (the object path's hops: writes and events before the first command).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.msg import Msg

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import signing, subjects

INJECTED, NOT_INJECTED = "Injected", "Not Injected"


@dataclass
class ExperimentView:
    commands: list[tuple[float, m.NodeCommand]] = field(default_factory=list)  # (received, command)
    results: list[tuple[float, m.ResultBatch]] = field(default_factory=list)
    all_injected_at: float | None = None
    all_recovered_at: float | None = None  # after having been all injected
    max_bytes: int = 0
    max_status_bytes: int = 0  # the `status` field alone, as JSON
    bytes_when_injected: int = 0
    records: int = 0
    gone_at: float | None = None
    writes: list[tuple[float, bool]] = field(default_factory=list)  # (seen, status alone changed)
    object_events: list[float] = field(default_factory=list)  # chaos.obj.<kind>.<ns>.<name>: every reader
    status_events: list[float] = field(default_factory=list)  # chaos.obj.status.<kind>...: the scheduler only
    last_value: Any = None


class Observer:
    def __init__(self, bus: busmod.Bus, kind: str, namespace: str) -> None:
        self.bus, self.kind, self.namespace = bus, kind, namespace
        self.by_uid: dict[str, ExperimentView] = {}
        self.by_name: dict[str, ExperimentView] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def view(self, name: str) -> ExperimentView:
        return self.by_name.setdefault(name, ExperimentView())

    async def start(self) -> None:
        # Core subscriptions on the streams' own subjects (from the table): the services' consumers
        # are left as they are.
        for stream, cb in (
            (subjects.COMMANDS, self._on_command),
            (subjects.RESULTS, self._on_result),
            (subjects.OBJECTS, self._on_object_event),
        ):
            for subject in stream.subjects:
                await self.bus.nc.subscribe(subject, cb=cb)
        store = await self.bus.bucket(subjects.OBJECT_STORE)
        self._tasks.append(asyncio.ensure_future(self._follow(store.follow(f"{self.kind}.{self.namespace}.>"))))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def _uid_view(self, uid: str, name: str) -> ExperimentView:
        v = self.by_uid.get(uid)
        if v is None:
            v = self.by_uid[uid] = self.view(name)
        return v

    async def _on_command(self, msg: Msg) -> None:
        now = time.time()
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            cmd = busmod.decode(signing.peek(msg.data), m.NodeCommand)  # timing only: no need to verify
            self._uid_view(cmd.experiment_uid, cmd.name).commands.append((now, cmd))

    async def _on_result(self, msg: Msg) -> None:
        now = time.time()
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            batch = busmod.decode(msg.data, m.ResultBatch)
            self._uid_view(batch.experiment_uid, batch.name).results.append((now, batch))

    async def _on_object_event(self, msg: Msg) -> None:
        now, tokens = time.time(), msg.subject.split(".")
        status = len(tokens) == 6 and tokens[2] == "status"
        kind, namespace, name = tokens[-3:]
        if kind != self.kind or namespace != self.namespace:
            return
        v = self.view(name)
        (v.status_events if status else v.object_events).append(now)

    async def _follow(self, changes: AsyncIterator[busmod.Stored[bytes] | None]) -> None:
        async for entry in changes:
            if entry is None:
                continue
            now = time.time()
            name = entry.key.split(".", 2)[2]
            v = self.view(name)
            if entry.deleted or not entry.value:
                v.gone_at = v.gone_at or now
                continue
            size = len(entry.value)
            v.max_bytes = max(v.max_bytes, size)
            try:
                obj = msgspec.json.decode(entry.value)
            except msgspec.DecodeError:
                continue
            before, v.last_value = v.last_value, obj
            v.writes.append((now, before is not None and _status_alone(before, obj)))
            status = obj.get("status") or {}
            v.max_status_bytes = max(v.max_status_bytes, len(msgspec.json.encode(status)))
            records = (status.get("experiment") or {}).get("containerRecords") or []
            v.records = max(v.records, len(records))
            phases = {r.get("phase") for r in records}
            if records and phases == {INJECTED} and v.all_injected_at is None:
                v.all_injected_at, v.bytes_when_injected = now, size
            if records and phases == {NOT_INJECTED} and v.all_injected_at is not None and v.all_recovered_at is None:
                v.all_recovered_at = now


def _status_alone(before: dict[str, Any], after: dict[str, Any]) -> bool:
    return before.get("status") != after.get("status") and {k: v for k, v in before.items() if k != "status"} == {
        k: v for k, v in after.items() if k != "status"
    }
