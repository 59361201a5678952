"""The cluster injector (`injector --cluster`) against the API server (the fake, or
CHAOSBUS_TEST_KUBECONFIG): its real Node, journal and executor with the API-level faults, driven by
commands as the scheduler sends them, without NATS. pod-kill deletes with the grace period and the
selected uid; pod-failure pauses every image, keeps the originals in Chaos Mesh's annotations,
restores them exactly on recover, at the deadline after a restart, and counts a deleted Pod as
recovered. Also: the server accepts our patch form and refuses non-image spec changes (422).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kube.client import KubeError
from kube.conftest import KubeEnv

from chaosbus.common import kubeclient, subjects
from chaosbus.common import messages as m
from chaosbus.injector import cluster
from chaosbus.injector import executor as ex
from chaosbus.injector import journal as jr
from chaosbus.injector.node import Node

PAUSE = "registry.k8s.io/pause:3.9"
IMAGES = {"setup": "busybox:1.36", "main": "nginx:1.25", "side": "envoy:1.29"}


def make_pod(kube: KubeEnv, name: str) -> dict[str, Any]:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "nodeName": "cluster-test-node",
            "initContainers": [{"name": "setup", "image": IMAGES["setup"]}],
            "containers": [{"name": n, "image": IMAGES[n]} for n in ("main", "side")],
        },
    }
    created: dict[str, Any] = kube.client.create(f"/api/v1/namespaces/{kube.namespace}/pods", body)
    return created


def pod_path(kube: KubeEnv, name: str) -> str:
    return f"/api/v1/namespaces/{kube.namespace}/pods/{name}"


def images(pod: dict[str, Any]) -> dict[str, str]:
    spec = pod["spec"]
    return {c["name"]: c["image"] for f in ("initContainers", "containers") for c in spec.get(f) or []}


def chaos_annotations(pod: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in (pod["metadata"].get("annotations") or {}).items() if "pod-failure" in k}


def command(
    pod: dict[str, Any],
    fault: m.Fault,
    *,
    op: str = "apply",
    name: str = "pf",
    uid: str = "exp-1",
    deadline: float | None = None,
) -> m.NodeCommand:
    meta = pod["metadata"]
    action = m.TargetAction(
        target_id=f"{meta['namespace']}/{meta['name']}",
        op=op,  # type: ignore[arg-type]
        pod_uid=meta["uid"],
        namespace=meta["namespace"],
        pod_name=meta["name"],
        container_ids=["containerd://0123abcd"],
        fault=fault,
    )
    return m.NodeCommand(
        command_id=f"{uid}.{uuid.uuid4().hex[:8]}",
        experiment_uid=uid,
        generation=1,
        kind="PodChaos",
        namespace=meta["namespace"],
        name=name,
        node=subjects.CLUSTER_NODE,
        issued_at=time.time(),
        deadline=deadline,
        actions=[action],
    )


class Injector:
    """A cluster injector's node machinery on one journal file; `restart` simulates a crash."""

    def __init__(self, kube: KubeEnv, journal_path: Path) -> None:
        self.kube, self.path = kube, journal_path
        self.node: Node | None = None
        self.api: Any = None

    async def start(self, *, clock_offset: float = 0.0, lease_ttl: float = 15.0) -> Node:
        self.api = await kubeclient.api_client(str(self.kube.kubeconfig))
        journal = jr.Journal(self.path)
        pods = cluster.KubePods(self.api, asyncio.get_running_loop())
        executor = ex.Executor(
            journal, subjects.CLUSTER_NODE, registry=cluster.registry(pods, PAUSE), resolve=cluster.resolve_pod_only
        )
        self.node = Node(journal, executor, clock=lambda: time.time() + clock_offset, lease_ttl=lease_ttl)
        await self.node.start()
        return self.node

    async def stop(self) -> None:
        if self.node is not None:
            self.node.close()
            self.node.journal.close()
            self.node = None
        if self.api is not None:
            await self.api.close()
            self.api = None

    @classmethod
    @contextlib.asynccontextmanager
    async def started(cls, kube: KubeEnv, journal_path: Path) -> AsyncIterator[Injector]:
        inj = cls(kube, journal_path)
        await inj.start()
        try:
            yield inj
        finally:
            await inj.stop()


@pytest.fixture
async def injector(kube: KubeEnv, tmp_path: Path) -> AsyncIterator[Injector]:
    async with Injector.started(kube, tmp_path / "cluster-journal.db") as inj:
        yield inj


async def run(inj: Injector, cmd: m.NodeCommand) -> m.TargetResult:
    assert inj.node is not None
    batch = await inj.node.on_command(cmd)
    assert batch is not None and len(batch.results) == 1
    return batch.results[0]


async def test_pod_kill_deletes_with_the_grace_period(kube: KubeEnv, injector: Injector) -> None:
    pod = make_pod(kube, "web-0")
    res = await run(injector, command(pod, m.PodKill(grace_period=7), name="pk", uid="exp-pk"))
    assert res.ok and res.message == "pod deleted (gracePeriodSeconds=7)", res
    after = kube.client.get(pod_path(kube, "web-0"))
    # Node-bound: Terminating with our grace until a kubelet finishes it (none here).
    assert after is not None and after["metadata"]["deletionGracePeriodSeconds"] == 7
    assert after["metadata"]["deletionTimestamp"]
    if kube.fake is not None:
        assert any(
            meth == "DELETE" and path.endswith("/pods/web-0?gracePeriodSeconds=7") for meth, path in kube.fake.requests
        ), kube.fake.requests[-5:]
    assert injector.node is not None and injector.node.journal.open_entries() == []  # one-shot


async def test_pod_kill_spares_a_pod_recreated_under_the_same_name(kube: KubeEnv, injector: Injector) -> None:
    old = make_pod(kube, "web-1")
    kube.client.delete(pod_path(kube, "web-1"), gracePeriodSeconds="0")
    new = make_pod(kube, "web-1")
    res = await run(injector, command(old, m.PodKill(grace_period=0), name="pk", uid="exp-pk2"))
    assert res.ok and res.message.startswith("target gone"), res
    still = kube.client.get(pod_path(kube, "web-1"))
    assert still is not None and still["metadata"]["uid"] == new["metadata"]["uid"]
    assert not still["metadata"].get("deletionTimestamp")


async def test_a_pod_kill_interrupted_before_the_delete_runs_when_redelivered(
    kube: KubeEnv, injector: Injector
) -> None:
    pod = make_pod(kube, "web-10")
    cmd = command(pod, m.PodKill(grace_period=0), name="pk", uid="exp-int")
    assert injector.node is not None
    await injector.node.run_in_thread(injector.node.executor.begin, cmd, injector.node.halt)
    await injector.stop()  # crashed after journaling the intent, before the delete
    node = await injector.start()
    entry = node.journal.get(jr.entry_key("exp-int", ".", f"{kube.namespace}/web-10"))
    assert entry is not None and entry.state == jr.RECOVERED and "interrupted" in entry.reason, entry
    assert kube.client.get(pod_path(kube, "web-10")) is not None
    res = await run(injector, cmd)  # never acked, so JetStream redelivers it
    assert res.ok and res.message == "pod deleted (gracePeriodSeconds=0)", res
    kube.client.wait_for(lambda: kube.client.get(pod_path(kube, "web-10")) is None, what="pod deleted")


async def test_pod_failure_pauses_images_and_recover_restores_exactly(kube: KubeEnv, injector: Injector) -> None:
    pod = make_pod(kube, "web-2")
    before = kube.client.get(pod_path(kube, "web-2"))
    assert before is not None
    res = await run(injector, command(pod, m.PodFailure()))
    assert res.ok, res
    paused = kube.client.get(pod_path(kube, "web-2"))
    assert paused is not None and images(paused) == {n: PAUSE for n in IMAGES}
    assert chaos_annotations(paused) == {
        "chaos-mesh-pf-pod-failure-setup-init-image": IMAGES["setup"],
        "chaos-mesh-pf-pod-failure-main-normal-image": IMAGES["main"],
        "chaos-mesh-pf-pod-failure-side-normal-image": IMAGES["side"],
    }
    again = await run(injector, command(pod, m.PodFailure()))  # a second apply keeps the first originals
    assert again.ok
    assert chaos_annotations(kube.client.get(pod_path(kube, "web-2")) or {"metadata": {}}) == chaos_annotations(paused)
    rec = await run(injector, command(pod, m.PodFailure(), op="recover"))
    assert rec.ok and rec.message == "original images restored", rec
    after = kube.client.get(pod_path(kube, "web-2"))
    assert after is not None and after["spec"] == before["spec"]
    assert chaos_annotations(after) == {}
    assert injector.node is not None and injector.node.journal.open_entries() == []


async def test_restarted_injector_restores_at_the_deadline(kube: KubeEnv, injector: Injector) -> None:
    pod = make_pod(kube, "web-3")
    before = copy.deepcopy(kube.client.get(pod_path(kube, "web-3")))
    res = await run(injector, command(pod, m.PodFailure(), deadline=time.time() + 2.0))
    assert res.ok, res
    await injector.stop()  # crashed mid-fault: nothing recovered on the way out
    paused = kube.client.get(pod_path(kube, "web-3"))
    assert paused is not None and images(paused)["main"] == PAUSE
    node = await injector.start(clock_offset=30.0)  # back after the deadline passed
    after = kube.client.get(pod_path(kube, "web-3"))
    assert after is not None and before is not None and after["spec"] == before["spec"]
    assert chaos_annotations(after) == {}
    assert node.journal.open_entries() == []
    entry = node.journal.get(jr.entry_key("exp-1", ".", f"{kube.namespace}/web-3"))
    assert entry is not None and entry.state == jr.RECOVERED
    assert entry.reason == "recovered: deadline passed while the injector was down"


async def test_a_new_injector_without_the_journal_restores_from_the_annotations(
    kube: KubeEnv, injector: Injector, tmp_path: Path
) -> None:
    pod = make_pod(kube, "web-8")
    before = kube.client.get(pod_path(kube, "web-8"))
    assert (await run(injector, command(pod, m.PodFailure()))).ok
    await injector.stop()
    fresh = Injector(kube, tmp_path / "a-lost-journal.db")  # e.g. rescheduled without its volume
    await fresh.start()
    try:
        rec = await run(fresh, command(pod, m.PodFailure(), op="recover"))
    finally:
        await fresh.stop()
    assert rec.ok and rec.message == "original images restored", rec
    after = kube.client.get(pod_path(kube, "web-8"))
    assert after is not None and before is not None and after["spec"] == before["spec"]
    assert chaos_annotations(after) == {}


async def test_a_silent_scheduler_lets_the_lease_restore_the_images(kube: KubeEnv, tmp_path: Path) -> None:
    inj = Injector(kube, tmp_path / "lease-journal.db")
    node = await inj.start(lease_ttl=0.5)
    try:
        pod = make_pod(kube, "web-9")
        before = kube.client.get(pod_path(kube, "web-9"))
        assert (await run(inj, command(pod, m.PodFailure(), uid="exp-lease"))).ok  # no duration: leased
        assert images(kube.client.get(pod_path(kube, "web-9")) or {"spec": {}})["main"] == PAUSE
        deadline = time.monotonic() + 20
        while node.journal.open_entries() and time.monotonic() < deadline:
            await node.tick()  # no lease renewal ever arrives
            await asyncio.sleep(0.1)
        entry = node.journal.get(jr.entry_key("exp-lease", ".", f"{kube.namespace}/web-9"))
        assert entry is not None and entry.state == jr.RECOVERED and "lease expired" in entry.reason, entry
        after = kube.client.get(pod_path(kube, "web-9"))
        assert after is not None and before is not None and after["spec"] == before["spec"]
    finally:
        await inj.stop()


async def test_a_pod_deleted_meanwhile_counts_as_recovered(kube: KubeEnv, injector: Injector) -> None:
    pod = make_pod(kube, "web-4")
    assert (await run(injector, command(pod, m.PodFailure()))).ok
    kube.client.delete(pod_path(kube, "web-4"), gracePeriodSeconds="0")
    kube.client.wait_for(lambda: kube.client.get(pod_path(kube, "web-4")) is None, what="pod gone")
    rec = await run(injector, command(pod, m.PodFailure(), op="recover"))
    assert rec.ok and rec.message.startswith("target gone: pod"), rec
    assert injector.node is not None and injector.node.journal.open_entries() == []


async def test_pod_failure_on_a_missing_pod_fails_without_retry(kube: KubeEnv, injector: Injector) -> None:
    pod = make_pod(kube, "web-5")
    kube.client.delete(pod_path(kube, "web-5"), gracePeriodSeconds="0")
    kube.client.wait_for(lambda: kube.client.get(pod_path(kube, "web-5")) is None, what="pod gone")
    res = await run(injector, command(pod, m.PodFailure()))
    assert not res.ok and not res.retryable and "no longer exists" in res.message, res


def test_server_accepts_image_patches_and_refuses_other_spec_changes(kube: KubeEnv) -> None:
    make_pod(kube, "web-6")
    path = pod_path(kube, "web-6")
    ops = [
        {"op": "test", "path": "/spec/containers/0/image", "value": IMAGES["main"]},
        {"op": "replace", "path": "/spec/containers/0/image", "value": PAUSE},
        {"op": "replace", "path": "/spec/initContainers/0/image", "value": PAUSE},
    ]
    out = kube.client.request("PATCH", path, ops, content_type="application/json-patch+json")
    assert images(out)["main"] == PAUSE and images(out)["setup"] == PAUSE
    for body, ctype in (
        ({"spec": {"containers": [{"name": "main", "command": ["sh"]}]}}, "application/strategic-merge-patch+json"),
        ([{"op": "add", "path": "/spec/containers/0/command", "value": ["sh"]}], "application/json-patch+json"),
        ({"spec": {"nodeName": "elsewhere"}}, "application/merge-patch+json"),
    ):
        with pytest.raises(KubeError) as err:
            kube.client.request("PATCH", path, body, content_type=ctype)
        assert err.value.status == 422, (body, err.value.body)
    failed_test = [
        {"op": "test", "path": "/spec/containers/0/image", "value": "stale:0"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "x:1"},
    ]
    with pytest.raises(KubeError) as err:
        kube.client.request("PATCH", path, failed_test, content_type="application/json-patch+json")
    assert err.value.status == 422
    final = kube.client.get(path)
    assert final is not None and images(final)["main"] == PAUSE


def test_delete_with_a_stale_uid_precondition_is_refused(kube: KubeEnv) -> None:
    make_pod(kube, "web-7")
    with pytest.raises(KubeError) as err:
        kube.client.request(
            "DELETE",
            pod_path(kube, "web-7"),
            {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": "not-this-one"}},
        )
    assert (err.value.status, err.value.body["reason"]) == (409, "Conflict")
    assert err.value.body["message"].startswith(
        'Operation cannot be fulfilled on Pod "web-7": the UID in the '
        "precondition (not-this-one) does not match the UID in record ("
    )
    assert err.value.body["message"].endswith("The object might have been deleted and then recreated")
    assert kube.client.get(pod_path(kube, "web-7")) is not None
