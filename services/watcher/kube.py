"""The watcher's cluster edge: list + watch every chaos kind and Pods, Namespaces and Nodes through
kubernetes-asyncio, feeding the same pure WatcherCore as local mode (so object events and the
target projection are identical), through a Reflector (resume from resourceVersion, relist on
410, nothing replayed) and the namespace scope. Only this module reads the Kubernetes API.

Each resource has its own loop: list (paged), then watch from the list's resourceVersion with
bookmarks; a stream that ends is re-opened from the last version seen; an ERROR event or HTTP 410
means relist; connection errors (API server restart) back off and resume from the same version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from chaosbus.common import bus as busmod
from chaosbus.common import kubeclient, kubehealth, service, subjects
from chaosbus.common import logging as cblog
from chaosbus.common.crd import API_VERSION, WATCHED_KINDS, plural_of
from chaosbus.watcher.app import emit
from chaosbus.watcher.core import Outputs, WatcherCore, stale_deletion
from chaosbus.watcher.metrics import WatcherMetrics
from chaosbus.watcher.reflect import Reflector, Scope, ScopedCore

log = cblog.get("watcher")
WATCH_TIMEOUT_S = 290
PAGE = 500
GROUP, VERSION = API_VERSION.split("/")


@dataclass(frozen=True)
class Resource:
    kind: str
    plural: str
    core: bool = False
    namespaced: bool = True


def resources() -> list[Resource]:
    chaos = [Resource(kind, plural_of(kind)) for kind in WATCHED_KINDS]
    return [
        *chaos,
        Resource("Pod", "pods", core=True),
        Resource("Namespace", "namespaces", core=True, namespaced=False),
        Resource("Node", "nodes", core=True, namespaced=False),
    ]


def scope_from(args: argparse.Namespace) -> Scope:
    """Chaos Mesh's controller knobs, from flags or its environment variable names."""
    s = service.scope(args)
    return Scope(
        cluster_scoped=s.cluster_scoped,
        target_namespace=s.target_namespace,
        enable_filter_namespace=s.enable_filter_namespace,
    )


def _list_fn(api: client.ApiClient, res: Resource, scope: Scope) -> Callable[..., Awaitable[Any]]:
    ns = None if scope.cluster_scoped else scope.target_namespace
    if not res.core:
        co = client.CustomObjectsApi(api)
        if ns is None:
            return partial(co.list_cluster_custom_object, GROUP, VERSION, res.plural)
        return partial(co.list_namespaced_custom_object, GROUP, VERSION, ns, res.plural)
    core = client.CoreV1Api(api)
    if res.kind == "Pod":
        return core.list_pod_for_all_namespaces if ns is None else partial(core.list_namespaced_pod, ns)
    if res.kind == "Namespace":
        return core.list_namespace if ns is None else partial(core.list_namespace, field_selector=f"metadata.name={ns}")
    return core.list_node


class KubeWatcher:
    def __init__(
        self,
        api: client.ApiClient,
        scope: Scope,
        core: ScopedCore,
        on_output: Callable[[Any], Awaitable[None]],
        metrics: WatcherMetrics,
    ) -> None:
        self.api, self.scope, self.core, self.on_output, self.metrics = api, scope, core, on_output, metrics
        self.synced: dict[str, asyncio.Event] = {}
        self.lock = asyncio.Lock()  # the core is shared by every resource loop

    async def run(self) -> None:
        await service.run_forever(*(self.reflect(res) for res in resources()))

    async def _feed(self, changes: list[Any]) -> None:
        async with self.lock:
            for change in changes:
                await self.on_output(self.core.apply(change))

    async def reflect(self, res: Resource) -> None:
        reflector = Reflector(res.kind)
        synced = self.synced.setdefault(res.kind, asyncio.Event())
        list_fn, version, backoff = _list_fn(self.api, res, self.scope), "", 0.2
        while True:
            try:
                if not version:
                    items, version = await self._list(list_fn)
                    await self._feed(reflector.on_list(items, int(version or 0)))
                    synced.set()
                version = await self._watch(res, list_fn, reflector, version)
                backoff = 0.2
            except Expired:
                log.info("resourceVersion expired; relisting", kind=res.kind)
                self.metrics.errors.labels("watch_expired").inc()
                version = ""
            except (aiohttp.ClientError, OSError, TimeoutError, ApiException) as e:
                if isinstance(e, ApiException) and e.status == 410:
                    version = ""
                    continue
                if isinstance(e, ApiException) and e.status in (403, 404):
                    log.warning("cannot list; retrying", kind=res.kind, status=e.status)
                self.metrics.errors.labels("api_unreachable").inc()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _list(self, list_fn: Callable[..., Awaitable[Any]]) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        token, version = "", ""
        while True:
            kwargs: dict[str, Any] = {"limit": PAGE, "_preload_content": False, "_request_timeout": (10, 60)}
            if token:
                kwargs["_continue"] = token
            resp = await list_fn(**kwargs)
            page = json.loads(await resp.read())
            items += page.get("items") or []
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion", ""))
            token = meta.get("continue") or ""
            if not token:
                return items, version

    async def _watch(
        self, res: Resource, list_fn: Callable[..., Awaitable[Any]], reflector: Reflector, version: str
    ) -> str:
        resp = await list_fn(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_S,
            _preload_content=False,
            _request_timeout=(10, WATCH_TIMEOUT_S + 30),
        )
        try:
            async for event in _lines(resp):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired(str(obj.get("message")))
                    log.warning("watch error event", kind=res.kind, status=obj)
                    return version
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    change = reflector.on_event(str(kind), obj)
                    if change is not None:
                        await self._feed([change])
                version = rv
        finally:
            resp.release()
        return version


class Expired(Exception):
    """The watch's resourceVersion is too old (410): relist."""


async def _lines(resp: Any) -> AsyncIterator[dict[str, Any]]:
    """Newline-delimited JSON events of a watch response, however long a line is."""
    buf = b""
    async for chunk in resp.content.iter_any():
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)
    if buf.strip():
        yield json.loads(buf)


async def main(args: argparse.Namespace) -> None:
    metrics = WatcherMetrics()
    scope = scope_from(args)
    ready = service.Readiness()
    ready.pending("relist", "the initial list of every watched kind is not yet published")
    async with service.connected(args, "chaosbus-watcher", metrics.registry, ready) as (bus, port):
        targets = await bus.bucket(subjects.TARGETS)
        api = await kubeclient.api_client(args.kubeconfig)
        async with api:
            core = ScopedCore(WatcherCore(), scope)
            watcher = KubeWatcher(api, scope, core, lambda out: emit(bus, targets, out, metrics), metrics)
            log.info(
                "watcher ready (Kubernetes API)",
                nats=args.nats,
                metrics_port=port,
                cluster_scoped=scope.cluster_scoped,
                target_namespace=scope.target_namespace,
                filter_namespaces=scope.enable_filter_namespace,
            )
            await service.run_forever(
                watcher.run(),
                prune_targets(watcher, bus),
                prune_objects(watcher, bus, metrics),
                listed(watcher, ready),
                kubehealth.watch_api(api, ready),
                service.hold(bus),
            )


async def listed(watcher: KubeWatcher, ready: service.Readiness) -> None:
    """Ready once every resource's first list is published (each list is fed, and so published,
    before its kind is marked synced)."""
    for res in resources():
        await watcher.synced.setdefault(res.kind, asyncio.Event()).wait()
    ready.done("relist")


async def prune_targets(watcher: KubeWatcher, bus: busmod.Bus) -> None:
    """Once Pods, Namespaces and Nodes are listed, drop projections of objects that vanished while
    no watcher ran (the projection outlives the process)."""
    for kind in ("Pod", "Namespace", "Node"):
        await watcher.synced.setdefault(kind, asyncio.Event()).wait()
    targets = await bus.bucket(subjects.TARGETS)
    keys = await targets.keys()
    live = {_target_key(obj) for obj in watcher.core.core.seen.values()}
    for key in keys:
        if key not in live:
            await targets.delete(key)
            log.info("pruned stale target", key=key)


async def prune_objects(watcher: KubeWatcher, bus: busmod.Bus, metrics: WatcherMetrics) -> None:
    """Once every chaos kind is listed, publish DELETED for objects whose last event says they
    exist but which vanished while no watcher ran (a Schedule or an object without our finalizer
    can): otherwise the scheduler would go on acting for them.
    """
    for kind in WATCHED_KINDS:
        await watcher.synced.setdefault(kind, asyncio.Event()).wait()
    last = await bus.last_messages(subjects.OBJECTS, subjects.OBJECT_CHANGES)
    async with watcher.lock:  # the reflectors may be feeding the core right now
        live = set(watcher.core.core.seen)
        gone = [e for e in last if e.type != "DELETED" and subjects.object_key(e.kind, e.namespace, e.name) not in live]
        out = Outputs(events=[event for e in gone for event in stale_deletion(e)])
        await emit(bus, await bus.bucket(subjects.TARGETS), out, metrics)
    for e in gone:
        log.info(
            "object vanished while no watcher ran: deletion published", kind=e.kind, namespace=e.namespace, name=e.name
        )


def _target_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    kind, name = obj.get("kind"), str(meta.get("name", ""))
    if kind == "Pod":
        return subjects.target_pod_key(str(meta.get("namespace", "")), name)
    if kind == "Namespace":
        return subjects.target_namespace_key(name)
    return subjects.target_node_key(name) if kind == "Node" else ""
