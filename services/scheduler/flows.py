"""The scheduler's edge for Workflows and StatusChecks: object events into the orchestrator, its
writes out as ObjectWrite messages (the recorder carries them out), HTTP probes run concurrently
when due, and a timer loop that wakes at the orchestrator's next deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import msgspec

from chaosbus.common import logging as cblog
from chaosbus.common import messages as m
from chaosbus.scheduler import probe as probemod
from chaosbus.scheduler.orchestrator import Orchestrator, Outputs, ProbeRequest
from chaosbus.scheduler.workflow import Write

log = cblog.get("scheduler")
Publish = Callable[[list[m.ObjectWrite]], Awaitable[None]]


def to_message(w: Write, now: float) -> m.ObjectWrite:
    body = msgspec.Raw(msgspec.json.encode(w.body)) if w.body is not None else msgspec.Raw(b"null")
    return m.ObjectWrite(write_id=f"wf.{uuid.uuid4().hex}", op=w.op, kind=w.kind,  # type: ignore[arg-type]
                         namespace=w.namespace, name=w.name, uid=w.uid, object=body,
                         annotations=w.annotations, reason=w.reason, at=now)


class Flows:
    def __init__(self, publish: Publish, orch: Orchestrator | None = None) -> None:
        self.publish, self.orch = publish, orch or Orchestrator()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # writes leave in the order the orchestrator decided them
        self._probes: set[asyncio.Task[None]] = set()

    async def emit(self, out: Outputs) -> None:
        for err in out.errors:
            log.error("orchestration object rejected", error=err)
        if out.writes:
            now = time.time()
            await self.publish([to_message(w, now) for w in out.writes])
        self._wake.set()

    async def on_object(self, event: m.ObjectEvent) -> None:
        async with self._lock:
            await self.emit(self.orch.on_object(event, time.time()))

    async def start(self) -> None:
        """Every object has been replayed: act."""
        async with self._lock:
            await self.emit(self.orch.start(time.time()))

    async def run(self, replayed: asyncio.Event) -> None:
        await replayed.wait()
        await self.start()
        while True:
            async with self._lock:
                await self.emit(self.orch.tick(time.time()))
                self._wake.clear()
                for req in self.orch.due_probes(time.time()):
                    task = asyncio.ensure_future(self._probe(req))
                    self._probes.add(task)
                    task.add_done_callback(self._probes.discard)
            nxt = self.orch.next_wakeup()
            delay = 1.0 if nxt is None else max(0.01, min(1.0, nxt - time.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _probe(self, req: ProbeRequest) -> None:
        result = await probemod.probe(req.http, req.timeout_s)
        log.info("status check probed", check=req.key[2], namespace=req.key[1], ok=result.ok, detail=result.detail)
        async with self._lock:
            await self.emit(self.orch.on_probe(req, result.ok, time.time()))
