"""Direct triggers over NATS request/reply (chaos.trigger.apply|get|recover|list), for tests and CI
without Kubernetes: served by the leading scheduler only (in a queue group), on local mode's
object store, so an applied experiment runs the normal path (watcher, scheduler, injector,
recorder) and its status is written as usual. Every failure is an ErrorReply naming the field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg

from chaosbus.common import bus as busmod
from chaosbus.common import halt, signing, subjects
from chaosbus.common import logging as cblog
from chaosbus.common import messages as m
from chaosbus.common.store import ObjectStore
from chaosbus.scheduler import requests as rq

log = cblog.get("scheduler")
Handler = Callable[[bytes], Awaitable[m.Message]]


class Triggers:
    def __init__(self, bus: busmod.Bus, store: ObjectStore, trust: signing.Trust | None = None) -> None:
        self.bus, self.store = bus, store
        self.trust = trust  # the kill-switch keys: judge its state as the injectors do (None: advisory)

    async def serve(self) -> None:
        handlers: list[tuple[subjects.CoreSubject[Any], Handler]] = [
            (subjects.TRIGGER_APPLY, self.apply),
            (subjects.TRIGGER_GET, self.get),
            (subjects.TRIGGER_RECOVER, self.recover),
            (subjects.TRIGGER_LIST, self.list),
        ]
        subs = []
        try:
            for entry, handler in handlers:
                subs.append(await self.bus.listen(entry, self._responder(handler), queue=subjects.TRIGGER_QUEUE))
            await asyncio.Event().wait()  # until cancelled (leadership lost or shutdown)
        finally:
            for sub in subs:
                await sub.unsubscribe()

    def _responder(self, handler: Handler) -> Callable[[Msg], Awaitable[None]]:
        async def respond(msg: Msg) -> None:
            try:
                reply: m.Message = await handler(msg.data)
            except rq.BadRequest as e:
                reply = e.reply()
            except Exception as e:  # a bug or NATS trouble: answer it, never take the scheduler down
                log.exception("trigger failed", subject=msg.subject, error=str(e))
                reply = m.ErrorReply(error=f"internal error: {e}")
            if msg.reply:
                await msg.respond(busmod.encode(reply))

        return respond

    async def apply(self, data: bytes) -> m.TriggerApplied:
        obj = rq.parse_apply(data)
        state = await halt.current(self.bus, self.trust)
        if state is not None and state.halted:
            raise rq.BadRequest("", halt.halted_message(state))
        stored, action = await self.store.apply_admitted(obj)
        md = stored["metadata"]
        log.info("trigger apply", kind=stored["kind"], namespace=md.get("namespace"), name=md["name"], action=action)
        return m.TriggerApplied(
            kind=stored["kind"],
            namespace=md.get("namespace", ""),
            name=md["name"],
            uid=md.get("uid", ""),
            action=action,
        )

    async def get(self, data: bytes) -> m.TriggerStatus:
        ref = rq.parse_ref(data)
        obj = await self.store.get(ref.kind, ref.namespace, ref.name)
        if obj is None:
            raise rq.not_found(ref)
        return rq.status_of(obj)

    async def recover(self, data: bytes) -> m.TriggerRecovered:
        ref = rq.parse_ref(data)
        outcome = await self.store.delete(ref.kind, ref.namespace, ref.name)
        if outcome == "notfound":
            raise rq.not_found(ref)
        log.info("trigger recover", kind=ref.kind, namespace=ref.namespace, name=ref.name, outcome=outcome)
        return m.TriggerRecovered(kind=ref.kind, namespace=ref.namespace, name=ref.name, outcome=outcome)

    async def list(self, data: bytes) -> m.TriggerList:
        req = rq.parse_list(data)
        objs = []
        for kind in rq.served():
            objs += await self.store.list(kind, req.namespace or None)
        return rq.listing(objs, req)
