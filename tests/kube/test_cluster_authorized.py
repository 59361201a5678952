"""The cluster injector re-checks what it is told, against the API server (the fake, or
CHAOSBUS_TEST_KUBECONFIG): a pod-kill or pod-failure without the Pod's uid touches nothing (never a
delete or patch by name alone), a Pod in a protected namespace is left alone, and a Task Pod asking
for privileges, host namespaces or hostPath, or outside the allowed namespaces, is never created.
Each refusal is a failed, not retryable, result naming why.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kube.conftest import KubeEnv
from kube.test_cluster_injector import IMAGES, PAUSE, command, images, make_pod, pod_path

from chaosbus.common import kubeclient, subjects
from chaosbus.common import messages as m
from chaosbus.common.config import TargetGuard
from chaosbus.injector import authorize, cluster
from chaosbus.injector import executor as ex
from chaosbus.injector import journal as jr
from chaosbus.injector.node import Node
from chaosbus.injector.podapi import PodApiError
from chaosbus.injector.podpolicy import TaskPodPolicy


class Guarded:
    """A cluster injector as the service builds it, with a given guard and Task Pod namespaces."""

    def __init__(self, kube: KubeEnv, journal_path: Path) -> None:
        self.kube, self.path = kube, journal_path
        self.api: Any = None
        self.node: Node | None = None
        self.pods: cluster.KubePods | None = None

    async def start(self, guard: TargetGuard, task_namespaces: frozenset[str] | None = None) -> Node:
        self.api = await kubeclient.api_client(str(self.kube.kubeconfig))
        journal = jr.Journal(self.path)
        self.pods = cluster.KubePods(self.api, asyncio.get_running_loop())
        tasks = TaskPodPolicy(protected=guard.protected_namespaces, namespaces=task_namespaces)
        executor = ex.Executor(
            journal,
            subjects.CLUSTER_NODE,
            registry=cluster.registry(self.pods, PAUSE, tasks),
            resolve=cluster.resolve_pod_only,
            policy=authorize.Policy(guard=guard, mode=authorize.CLUSTER, api=True),
        )
        self.node = Node(journal, executor, lease_ttl=15.0)
        await self.node.start()
        return self.node

    async def stop(self) -> None:
        if self.node is not None:
            self.node.close()
            self.node.journal.close()
        if self.api is not None:
            await self.api.close()


@pytest.fixture
async def guarded(kube: KubeEnv, tmp_path: Path) -> AsyncIterator[Guarded]:
    inj = Guarded(kube, tmp_path / "journal.db")
    yield inj
    await inj.stop()


async def run(node: Node, cmd: m.NodeCommand) -> m.TargetResult:
    batch = await node.on_command(cmd)
    assert batch is not None and len(batch.results) == 1
    return batch.results[0]


def without_uid(cmd: m.NodeCommand) -> m.NodeCommand:
    import msgspec

    return msgspec.structs.replace(cmd, actions=[msgspec.structs.replace(cmd.actions[0], pod_uid="")])


def assert_refused(res: m.TargetResult, why: str) -> None:
    assert not res.ok and not res.retryable, res
    assert res.message.startswith("refused: ") and why in res.message, res.message


def deletes(kube: KubeEnv, name: str) -> list[str]:
    return [p for meth, p in kube.fake.requests if meth == "DELETE" and f"/pods/{name}" in p] if kube.fake else []


async def test_a_pod_kill_without_a_pod_uid_deletes_nothing(kube: KubeEnv, guarded: Guarded) -> None:
    node = await guarded.start(TargetGuard())
    pod = make_pod(kube, "web-0")
    res = await run(node, without_uid(command(pod, m.PodKill(), name="pk", uid="exp-nouid")))
    assert_refused(res, f"no pod uid for {kube.namespace}/web-0")
    still = kube.client.get(pod_path(kube, "web-0"))
    assert still is not None and not still["metadata"].get("deletionTimestamp")
    assert deletes(kube, "web-0") == []


async def test_a_pod_failure_without_a_pod_uid_patches_nothing(kube: KubeEnv, guarded: Guarded) -> None:
    node = await guarded.start(TargetGuard())
    pod = make_pod(kube, "web-1")
    res = await run(node, without_uid(command(pod, m.PodFailure(), name="pf", uid="exp-nouid-pf")))
    assert_refused(res, "no pod uid")
    assert images(kube.client.get(pod_path(kube, "web-1"))) == IMAGES


async def test_the_pod_api_itself_never_deletes_by_name_alone(kube: KubeEnv, guarded: Guarded) -> None:
    await guarded.start(TargetGuard())
    make_pod(kube, "web-2")
    assert guarded.pods is not None
    with pytest.raises(PodApiError, match="needs its uid as a precondition"):
        await asyncio.to_thread(guarded.pods.delete, kube.namespace, "web-2", grace_period=0, uid="")
    assert kube.client.get(pod_path(kube, "web-2")) is not None


async def test_a_pod_in_a_protected_namespace_is_not_killed(kube: KubeEnv, guarded: Guarded) -> None:
    node = await guarded.start(TargetGuard(frozenset({kube.namespace})))
    pod = make_pod(kube, "etcd-0")
    res = await run(node, command(pod, m.PodKill(), name="pk", uid="exp-protected"))
    assert_refused(res, f"namespace {kube.namespace} is protected")
    still = kube.client.get(pod_path(kube, "etcd-0"))
    assert still is not None and not still["metadata"].get("deletionTimestamp")


def task(kube: KubeEnv, container: dict[str, Any], volumes: list[dict[str, Any]] | None = None) -> m.NodeCommand:
    uid = str(uuid.uuid4())
    fault = m.Task(
        argv=["true"], timeout_s=5, container=container, volumes=volumes or [], workflow="wf", workflow_node_uid=uid
    )
    action = m.TargetAction(target_id=f"{kube.namespace}/step-abcde", op="apply", fault=fault)
    return m.NodeCommand(
        command_id=f"{uid}.task",
        experiment_uid=uid,
        generation=1,
        kind="WorkflowNode",
        namespace=kube.namespace,
        name="step-abcde",
        node=subjects.CLUSTER_NODE,
        issued_at=time.time(),
        actions=[action],
    )


def task_pods(kube: KubeEnv) -> list[dict[str, Any]]:
    listed = kube.client.get(
        f"/api/v1/namespaces/{kube.namespace}/pods", labelSelector="chaos-mesh.org/controlled-by=step-abcde"
    ) or {"items": []}
    return list(listed["items"])


ROOTISH = [
    ({"securityContext": {"privileged": True}}, None, "spec.containers[0].securityContext.privileged"),
    ({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}, None, "added capabilities ['SYS_ADMIN']"),
    ({"ports": [{"containerPort": 80, "hostPort": 80}]}, None, "hostPort"),
    (
        {"volumeMounts": [{"name": "root", "mountPath": "/host"}]},
        [{"name": "root", "hostPath": {"path": "/"}}],
        "spec.volumes[0] (root): hostPath volumes are refused",
    ),
]


@pytest.mark.parametrize(("extra", "volumes", "why"), ROOTISH, ids=["privileged", "caps", "hostport", "hostpath"])
async def test_a_task_pod_asking_for_the_node_is_never_created(
    kube: KubeEnv, guarded: Guarded, extra: dict[str, Any], volumes: list[dict[str, Any]] | None, why: str
) -> None:
    node = await guarded.start(TargetGuard())
    container = {"name": "task", "image": "busybox", "command": ["id"], **extra}
    res = await run(node, task(kube, container, volumes))
    assert_refused(res, why)
    assert task_pods(kube) == []


async def test_task_pods_only_go_to_the_allowed_namespaces(kube: KubeEnv, guarded: Guarded) -> None:
    node = await guarded.start(TargetGuard(), task_namespaces=frozenset({"workflows"}))
    res = await run(node, task(kube, {"name": "task", "image": "busybox", "command": ["true"]}))
    assert_refused(res, f"namespace {kube.namespace} is not one where Task Pods may run")
    assert task_pods(kube) == []


async def test_no_task_pod_in_a_protected_namespace(kube: KubeEnv, guarded: Guarded) -> None:
    node = await guarded.start(TargetGuard(frozenset({kube.namespace})))
    res = await run(node, task(kube, {"name": "task", "image": "busybox", "command": ["true"]}))
    assert_refused(res, f"namespace {kube.namespace} is protected")
    assert task_pods(kube) == []
