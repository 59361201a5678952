"""What the dashboard knows, as NATS tells it: the objects (the last event of each on `chaos.obj.>`,
in both modes), local mode's Events and Nodes (the `objects` bucket), each injector's health report
and the kill switch. Every change bumps `version`; pages waiting for news wake up.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec

from chaosbus.common import bus as busmod
from chaosbus.common import halt, service, subjects
from chaosbus.common import logging as cblog
from chaosbus.common import messages as m

Obj = dict[str, Any]
log = cblog.get("dashboard")
HALT_POLL_S = 1.0
STORE_KINDS = ("Event", "Node")  # what only the object store holds (local mode)


class World:
    def __init__(self) -> None:
        self.objects: dict[str, Obj] = {}  # chaos.obj subject -> object
        self.store: dict[str, Obj] = {}  # KV key -> Event or Node
        self.health: dict[str, m.NodeHealth] = {}
        self.halt: m.HaltState | None = None
        self.version = 0  # any change
        self.objects_version = 0  # a change of objects, Events or the kill switch (not a health report)
        self.ready = asyncio.Event()  # the replay of existing objects is done
        self._changed = asyncio.Condition()

    async def _bump(self, *, objects: bool = True) -> None:
        self.version += 1
        self.objects_version += 1 if objects else 0
        async with self._changed:
            self._changed.notify_all()

    async def wait_change(self, since: int, within_s: float) -> int:
        """The version once it is past `since`, or after `within_s` seconds (a keep-alive)."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self.version > since), within_s)
        return self.version

    async def on_object(self, ev: m.ObjectEvent) -> None:
        key = subjects.object_subject(ev.kind, ev.namespace, ev.name)
        if ev.type == "DELETED":
            self.objects.pop(key, None)
        else:
            obj = msgspec.json.decode(ev.object)
            if isinstance(obj, dict):
                self.objects[key] = obj
        await self._bump()

    async def on_store(self, entry: busmod.Stored[bytes]) -> None:
        if entry.key.split(".", 1)[0] not in STORE_KINDS:
            return
        if entry.deleted:
            self.store.pop(entry.key, None)
        else:
            with contextlib.suppress(msgspec.DecodeError):
                obj = msgspec.json.decode(entry.value or b"")
                if isinstance(obj, dict):
                    self.store[entry.key] = obj
        await self._bump()

    async def on_health(self, report: m.NodeHealth) -> None:
        self.health[report.node] = report
        await self._bump(objects=False)

    async def set_halt(self, state: m.HaltState | None) -> None:
        if state != self.halt:
            self.halt = state
            await self._bump()

    def all(self) -> list[Obj]:
        return list(self.objects.values())

    def find(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.objects.get(subjects.object_subject(kind, namespace, name))

    def events(self) -> list[Obj]:
        return [o for o in self.store.values() if o.get("kind") == "Event"]

    def node_names(self) -> list[str]:
        return [str((o.get("metadata") or {}).get("name", "")) for o in self.store.values() if o.get("kind") == "Node"]


async def follow(bus: busmod.Bus, world: World, *, local: bool) -> None:
    """Feed `world` from NATS until cancelled (a failing loop takes the others down: the caller
    reconnects).
    """

    async def on_health(msg: Any) -> None:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            await world.on_health(busmod.decode(msg.data, m.NodeHealth))

    await bus.listen(subjects.HEALTH, on_health)
    loops = [
        bus.replay_and_follow(subjects.OBJECTS, world.on_object, caught_up=world.ready),
        _poll_halt(bus, world),
        # nats-py may close a connection for good (a server that refuses it after the CONNECT):
        # the loops above would wait on it forever, so this ends them and the caller connects anew.
        service.hold(bus, interval=0.5),
    ]
    if local:
        loops.append(_follow_store(bus, world))
    await service.run_forever(*loops)


async def _follow_store(bus: busmod.Bus, world: World) -> None:
    async for entry in (await bus.bucket(subjects.OBJECT_STORE)).follow():
        if entry is not None:
            await world.on_store(entry)


async def _poll_halt(bus: busmod.Bus, world: World) -> None:
    while True:
        try:
            await world.set_halt(await halt.current(bus))
        except Exception as e:
            log.info("kill switch state not read", error=str(e) or type(e).__name__)
        await asyncio.sleep(HALT_POLL_S)
