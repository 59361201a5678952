"""The watcher's edge: watch the local object store (NATS KV `objects`), publish object events
to JetStream and keep the target projection (KV `targets`) current.
"""

from __future__ import annotations

import argparse
import asyncio
import functools

import msgspec
import nats.errors

from chaosbus.common import bus as busmod
from chaosbus.common import logging as cblog
from chaosbus.common import messages as m
from chaosbus.common import service, subjects
from chaosbus.common.crd import API_VERSION
from chaosbus.common.crd.objects import decode_metadata
from chaosbus.common.pipeline import Pipeline
from chaosbus.watcher.core import Outputs, WatcherCore
from chaosbus.watcher.metrics import WatcherMetrics

log = cblog.get("watcher")


async def main(args: argparse.Namespace) -> None:
    metrics = WatcherMetrics()
    ready = service.Readiness()
    ready.pending(SNAPSHOT, "the initial snapshot of the object store is not yet published")
    async with service.connected(args, "chaosbus-watcher", metrics.registry, ready) as (bus, port):
        log.info("watching local object store", nats=args.nats, metrics_port=port)
        await service.run_forever(watch_objects(bus, WatcherCore(), metrics, ready), service.hold(bus))


SNAPSHOT = "snapshot"  # the readiness part: every object seen at start published


async def watch_objects(
    bus: busmod.Bus, core: WatcherCore, metrics: WatcherMetrics, ready: service.Readiness | None = None
) -> None:
    """Each change's events are published after the earlier ones of the same object, beside other
    objects' (a burst of applies shares its PubAck round trips); a publish that fails ends the
    watcher as an awaited one did, to start over from the store.
    """
    targets = await bus.bucket(subjects.TARGETS)
    pipe = Pipeline(name="watcher")
    failed: list[BaseException] = []
    me = asyncio.current_task()

    def check(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (e := task.exception()) is not None and not failed:
            failed.append(e)
            if me is not None:
                me.cancel()  # wherever the loop waits: the failure is raised below

    try:
        async for entry in (await bus.bucket(subjects.OBJECT_STORE)).follow():
            if entry is None:  # end of the initial snapshot
                await pipe.drain()
                log.info("initial snapshot published", objects=len(core.seen))
                if ready is not None:
                    ready.done(SNAPSHOT)
                continue
            out = _on_entry(core, entry, metrics)
            if out is not None:
                await pipe.room()
                pipe.submit({entry.key}, functools.partial(emit, bus, targets, out, metrics)).add_done_callback(check)
    except asyncio.CancelledError:
        if not failed or me is None:
            raise
        me.uncancel()
        raise failed[0] from None
    finally:
        pipe.cancel()


def _on_entry(core: WatcherCore, entry: busmod.Stored[bytes], metrics: WatcherMetrics) -> Outputs | None:
    if entry.deleted:
        return core.on_delete(entry.key, entry.revision)
    try:
        obj = msgspec.json.decode(entry.value or b"{}")
    except (msgspec.DecodeError, RecursionError) as e:
        metrics.errors.labels("undecodable_object").inc()
        log.error("undecodable object in store", key=entry.key, error=str(e))
        return None
    return core.on_put(entry.key, obj, entry.revision) if isinstance(obj, dict) else None


async def emit(
    bus: busmod.Bus, targets: busmod.TypedBucket[subjects.TargetValue], out: Outputs, metrics: WatcherMetrics
) -> None:
    for subject, event, msg_id in out.events:
        try:
            await bus.publish(subjects.OBJECTS, subject, event, msg_id=msg_id)
        except nats.errors.MaxPayloadError:
            # Readers get the object's metadata and its size: the scheduler marks it Failed, saying why.
            metrics.errors.labels("object_too_large").inc()
            log.error(
                "object larger than NATS max_payload: sent without its spec", subject=subject, bytes=len(event.object)
            )
            try:
                await bus.publish(subjects.OBJECTS, subject, too_large(event), msg_id=msg_id)
            except nats.errors.MaxPayloadError:  # not even its identity fits: only the log says so
                continue
        metrics.events.labels(event.kind, event.type).inc()
    for key, target in out.target_puts:
        await targets.put(key, target)
        metrics.targets.labels("put").inc()
    for key in out.target_deletes:
        await targets.delete(key)
        metrics.targets.labels("delete").inc()


def too_large(event: m.ObjectEvent) -> m.ObjectEvent:
    """The event with only the object's identity (no labels or annotations: they may be what is
    large), and its size in `too_large`.
    """
    try:
        meta = decode_metadata(event.object)
    except msgspec.DecodeError:
        meta = {}
    keep = (
        "name",
        "namespace",
        "uid",
        "generation",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "finalizers",
    )
    stub = {"apiVersion": API_VERSION, "kind": event.kind, "metadata": {k: v for k, v in meta.items() if k in keep}}
    return msgspec.structs.replace(event, object=msgspec.Raw(msgspec.json.encode(stub)), too_large=len(event.object))
