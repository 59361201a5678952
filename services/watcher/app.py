"""The watcher's edge: watch the local object store (NATS KV `objects`), publish object events
to JetStream and keep the target projection (KV `targets`) current.
"""

from __future__ import annotations

import argparse

import msgspec
import nats.errors
from nats.js.kv import KeyValue

from chaosbus.common import bus as busmod
from chaosbus.common import logging as cblog
from chaosbus.common import messages as m
from chaosbus.common import service, subjects
from chaosbus.common.crd import API_VERSION
from chaosbus.common.crd.objects import decode_metadata
from chaosbus.watcher.core import Outputs, WatcherCore
from chaosbus.watcher.metrics import WatcherMetrics

log = cblog.get("watcher")


async def main(args: argparse.Namespace) -> None:
    metrics = WatcherMetrics()
    async with service.connected(args, "chaosbus-watcher", metrics.registry) as (bus, port):
        log.info("watching local object store", nats=args.nats, metrics_port=port)
        await watch_objects(bus, WatcherCore(), metrics)


async def watch_objects(bus: busmod.Bus, core: WatcherCore, metrics: WatcherMetrics) -> None:
    targets = await bus.kv(subjects.TARGETS.name)
    async for entry in bus.follow_kv(subjects.OBJECT_STORE.name):
        if entry is None:  # end of the initial snapshot
            log.info("initial snapshot published", objects=len(core.seen))
            continue
        rev = entry.revision
        if entry.deleted:
            out = core.on_delete(entry.key, rev)
        else:
            try:
                obj = msgspec.json.decode(entry.value or b"{}")
            except (msgspec.DecodeError, RecursionError) as e:
                metrics.errors.labels("undecodable_object").inc()
                log.error("undecodable object in store", key=entry.key, error=str(e))
                continue
            if not isinstance(obj, dict):
                continue
            out = core.on_put(entry.key, obj, rev)
        await emit(bus, targets, out, metrics)


async def emit(bus: busmod.Bus, targets: KeyValue, out: Outputs, metrics: WatcherMetrics) -> None:
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
        await targets.put(key, busmod.encode(target))
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
