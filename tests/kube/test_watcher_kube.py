"""The watcher's Kubernetes edge against the API (fake, or a real server): chaos objects become the
same object events as in local mode, Pods/Namespaces/Nodes the same target projection; it resumes
after an API server restart without missing or replaying an experiment, and relists on 410; its
/readyz waits for its first list of every kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers.prom import free_port
from helpers.readiness import readyz, readyz_until, stop_groups
from kube.conftest import KubeEnv
from kube.kubelet import Kubelet

from chaosbus.common import bus as busmod
from chaosbus.common import kubeclient, natsserver, subjects
from chaosbus.common import messages as m
from chaosbus.watcher import kube as wkube
from chaosbus.watcher.app import emit
from chaosbus.watcher.core import WatcherCore, project_pod
from chaosbus.watcher.metrics import WatcherMetrics
from chaosbus.watcher.reflect import Scope, ScopedCore

pytestmark = pytest.mark.integration


def chaos(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "PodChaos",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"action": "pod-kill", "mode": "one", "selector": {}},
    }


class Running:
    def __init__(self, bus: busmod.Bus) -> None:
        self.bus = bus
        self.events: list[m.ObjectEvent] = []
        self.synced: dict[str, asyncio.Event] = {}  # the watcher's: kind -> its first list published

    async def targets(self) -> dict[str, bytes]:
        kv = await self.bus.kv(subjects.TARGETS.name)
        out = {}
        with contextlib.suppress(Exception):
            for key in await kv.keys():
                entry = await kv.get(key)
                out[key] = entry.value or b""
        return out

    async def targets_until(self, check: Callable[[dict[str, bytes]], bool], limit: float = 20) -> dict[str, bytes]:
        """The projection once `check` holds for it, polled against a deadline (not a count of
        polls, each of which takes longer under load)."""
        deadline = asyncio.get_running_loop().time() + limit
        while not check(targets := await self.targets()):
            assert asyncio.get_running_loop().time() < deadline, f"timed out; targets {sorted(targets)}"
            await asyncio.sleep(0.05)
        return targets

    async def until(self, check: Callable[[], Any], limit: float = 10) -> None:
        deadline = asyncio.get_running_loop().time() + limit
        while not check():
            assert asyncio.get_running_loop().time() < deadline, f"timed out; events {self.seen()}"
            await asyncio.sleep(0.05)

    def seen(self) -> list[tuple[str, str]]:
        return [(e.type, e.name) for e in self.events]


@contextlib.asynccontextmanager
async def watching(
    kube: KubeEnv, bus: busmod.Bus, scope: Scope | None = None, *, prune: bool = False
) -> AsyncIterator[Running]:
    run = Running(bus)

    async def on_msg(msg: Any) -> None:
        run.events.append(msgspec.json.decode(msg.data, type=m.ObjectEvent))

    sub = await bus.nc.subscribe(subjects.OBJECT_CHANGES, cb=on_msg)
    api = await kubeclient.api_client(str(kube.kubeconfig))
    metrics = WatcherMetrics()
    targets = await bus.bucket(subjects.TARGETS)
    scope = scope or Scope(cluster_scoped=False, target_namespace=kube.namespace)
    watcher = wkube.KubeWatcher(
        api, scope, ScopedCore(WatcherCore(), scope), lambda out: emit(bus, targets, out, metrics), metrics
    )
    run.synced = watcher.synced
    loops = [watcher.run(), wkube.prune_objects(watcher, bus, metrics)] if prune else [watcher.run()]
    task = asyncio.ensure_future(asyncio.gather(*loops))
    try:
        yield run
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sub.unsubscribe()
        await api.close()


async def test_chaos_objects_become_object_events(kube: KubeEnv, bus: busmod.Bus) -> None:
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/podchaos"
    kube.client.create(path, chaos("before", kube.namespace))
    async with watching(kube, bus) as run:
        await run.until(lambda: ("ADDED", "before") in run.seen())
        created = kube.client.create(path, chaos("after", kube.namespace))
        await run.until(lambda: ("ADDED", "after") in run.seen())
        kube.client.delete(f"{path}/after")
        await run.until(lambda: ("DELETED", "after") in run.seen())
    event = next(e for e in run.events if e.name == "after" and e.type == "ADDED")
    assert (event.kind, event.namespace, event.uid, event.generation, event.resource_version) == (
        "PodChaos",
        kube.namespace,
        created["metadata"]["uid"],
        1,
        created["metadata"]["resourceVersion"],
    )
    assert msgspec.json.decode(event.object)["spec"] == created["spec"]
    assert run.seen().count(("ADDED", "before")) == 1


async def test_an_object_deleted_while_no_watcher_ran_gets_its_deletion(kube: KubeEnv, bus: busmod.Bus) -> None:
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/podchaos"
    kube.client.create(path, chaos("stays", kube.namespace))
    kube.client.create(path, chaos("vanishes", kube.namespace))
    async with watching(kube, bus, prune=True) as run:
        await run.until(lambda: {("ADDED", "stays"), ("ADDED", "vanishes")} <= set(run.seen()))
    kube.client.delete(f"{path}/vanishes")  # no finalizer here (no recorder): gone at once
    async with watching(kube, bus, prune=True) as run:
        await run.until(lambda: ("DELETED", "vanishes") in run.seen())
        await asyncio.sleep(0.5)
    assert ("DELETED", "stays") not in run.seen()
    last = await bus.last_messages(subjects.OBJECTS, subjects.OBJECT_CHANGES)
    assert sorted((e.name, e.type) for e in last) == [("stays", "ADDED"), ("vanishes", "DELETED")]


async def test_pods_are_projected_as_in_local_mode(kube: KubeEnv, bus: busmod.Bus) -> None:
    kubelet = Kubelet(kube.client, "node-w1")
    try:
        kubelet.register_node({"zone": "z1"})
        pod = kubelet.run_pod("web-0", kube.namespace, {"app": "web"}, containers={"main": ["sleep", "60"]})
        async with watching(kube, bus) as run:
            key = subjects.target_pod_key(kube.namespace, "web-0")
            targets = await run.targets_until(lambda t: key in t and "node.node-w1" in t)
            stored = kube.client.get(pod.path)
            assert stored is not None
            assert msgspec.json.decode(targets[key], type=m.TargetPod) == project_pod(stored)
            assert msgspec.json.decode(targets["node.node-w1"], type=m.TargetNode).labels["zone"] == "z1"
            assert f"namespace.{kube.namespace}" in targets
    finally:
        kubelet.close()


async def restart_api_server(kube: KubeEnv) -> None:
    """Stop the API server and start it again on the same address and storage."""
    if kube.fake is not None:
        kube.fake.stop()
        await asyncio.sleep(0.5)
        kube.fake.start()
        return
    plane = kube.need_plane("restarting the API server")
    await asyncio.to_thread(plane.restart_apiserver)  # the watcher keeps running on this loop meanwhile


async def test_resumes_after_an_api_server_restart_without_replay(kube: KubeEnv, bus: busmod.Bus) -> None:
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/podchaos"
    kube.client.create(path, chaos("a", kube.namespace))
    async with watching(kube, bus) as run:
        await run.until(lambda: ("ADDED", "a") in run.seen())
        await restart_api_server(kube)
        kube.client.create(path, chaos("b", kube.namespace))
        await run.until(lambda: ("ADDED", "b") in run.seen())
        await asyncio.sleep(0.5)
    assert run.seen() == [("ADDED", "a"), ("ADDED", "b")]


async def test_410_relists_and_reports_what_happened_meanwhile(kube: KubeEnv, bus: busmod.Bus) -> None:
    fake = kube.need_fake("expiring resourceVersions on demand")
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/podchaos"
    kube.client.create(path, chaos("keep", kube.namespace))
    kube.client.create(path, chaos("gone", kube.namespace))
    async with watching(kube, bus) as run:
        await run.until(lambda: {("ADDED", "keep"), ("ADDED", "gone")} <= set(run.seen()))
        fake.stop()
        res = fake.store.resources[("chaos-mesh.org", "v1alpha1", "podchaos")]
        fake.call(lambda: fake.api.delete(res, kube.namespace, "gone", None, dry_run=False))
        fake.call(lambda: fake.api.create(res, kube.namespace, chaos("new", kube.namespace), dry_run=False))
        fake.compact()
        fake.start()
        await run.until(lambda: ("DELETED", "gone") in run.seen() and ("ADDED", "new") in run.seen())
        await asyncio.sleep(0.3)
    assert sorted(run.seen()) == sorted([("ADDED", "keep"), ("ADDED", "gone"), ("DELETED", "gone"), ("ADDED", "new")])


async def test_inject_filter_in_cluster_mode(kube: KubeEnv, bus: busmod.Bus) -> None:
    kubelet = Kubelet(kube.client, "node-w1")
    try:
        kubelet.run_pod("web-0", kube.namespace, {"app": "web"}, containers={"main": ["sleep", "60"]})
        scope = Scope(cluster_scoped=False, target_namespace=kube.namespace, enable_filter_namespace=True)
        async with watching(kube, bus, scope) as run:
            key = subjects.target_pod_key(kube.namespace, "web-0")
            # Pods and Namespaces listed and published: the pod's absence is the filter's doing.
            for kind in ("Pod", "Namespace"):
                await asyncio.wait_for(run.synced.setdefault(kind, asyncio.Event()).wait(), timeout=20)
            assert key not in await run.targets()
            kube.client.merge_patch(
                f"/api/v1/namespaces/{kube.namespace}",
                {"metadata": {"annotations": {"chaos-mesh.org/inject": "enabled"}}},
            )
            await run.targets_until(lambda t: key in t)
    finally:
        kubelet.close()


def test_readyz_waits_for_the_first_list_of_every_kind(
    kube: KubeEnv, nats_server: natsserver.EmbeddedServer, tmp_path: Path
) -> None:
    """Connected to NATS but with no API server to list from, the watcher process is not ready and
    says why; once the API server answers and every kind is listed and published, it is."""
    fake = kube.need_fake("an API server stopped before the watcher starts")
    fake.stop()
    port = free_port()
    argv = [sys.executable, "-m", "chaosbus.watcher", "--kubeconfig", str(kube.kubeconfig)]
    argv += ["--nats", nats_server.url, "--metrics-port", str(port)]
    with open(tmp_path / "watcher.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    try:
        # A loaded machine starts Python slowly; it says "no NATS connection" until it has one.
        unready = readyz_until(port, 503, 60, saying="list")
        assert unready[0] == 503 and "list" in unready[1], unready
        time.sleep(1.0)  # retrying against the missing API server meanwhile
        assert readyz(port)[0] == 503
        fake.start()
        assert readyz_until(port, 200, 60) == (200, "ready")
    finally:
        stop_groups(proc)
