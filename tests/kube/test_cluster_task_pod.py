"""A Workflow Task step run by the cluster injector as a Pod, against the API fake with the test
kubelet running the Pod's command for real: the Pod is created (labels, owner, restartPolicy),
runs, and its exit code and log come back in the result; a failing command gives its exit code;
a Pod past its timeout is deleted and the step fails saying so; a spec the API refuses, a missing
namespace, a Pod of that name owned by another node and an image that can never be pulled fail
with the reason (the stuck Pod deleted); and a command re-sent after an injector restart
re-attaches to the Pod the first life created instead of creating a second.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from kube.conftest import KubeEnv
from kube.kubelet import Kubelet
from kube.test_cluster_injector import Injector, run

from chaosbus.common import messages as m
from chaosbus.common import subjects
from chaosbus.injector import journal as jr
from chaosbus.injector.faults import task_pod

PY = sys.executable


@pytest.fixture
def kubelet(kube: KubeEnv) -> Iterator[Kubelet]:
    fake = kube.need_fake("the test kubelet serves container logs through the fake")
    k = Kubelet(kube.client, "task-node", logs=fake.set_container_log)
    with k.running(0.05):
        yield k
    k.close()


@pytest.fixture
async def injector(kube: KubeEnv, tmp_path: Path) -> AsyncIterator[Injector]:
    async with Injector.started(kube, tmp_path / "cluster-journal.db") as inj:
        yield inj


def workflow_node_uid(kube: KubeEnv, node: str) -> str:
    """The uid of WorkflowNode `node`, created if missing: a Task Pod's owner must exist, or the
    garbage collector deletes the Pod."""
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/workflownodes"
    found = kube.client.get(f"{path}/{node}") or kube.client.create(
        path,
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "WorkflowNode",
            "metadata": {"name": node},
            "spec": {"templateName": node, "workflowName": "wf", "type": "Task"},
        },
    )
    uid: str = found["metadata"]["uid"]
    return uid


def task_command(
    kube: KubeEnv, node: str, container: dict[str, Any], *, timeout_s: float = 30.0, node_uid: str | None = None
) -> m.NodeCommand:
    uid = node_uid or workflow_node_uid(kube, node)
    task = m.Task(
        argv=[*container.get("command", []), *container.get("args", [])],
        timeout_s=timeout_s,
        container=container,
        workflow="wf",
        workflow_node_uid=uid,
    )
    action = m.TargetAction(target_id=f"{kube.namespace}/{node}", op="apply", fault=task)
    return m.NodeCommand(
        command_id=f"{uid}.task.{uuid.uuid4().hex[:8]}",
        experiment_uid=uid,
        generation=1,
        kind="WorkflowNode",
        namespace=kube.namespace,
        name=node,
        node=subjects.CLUSTER_NODE,
        issued_at=time.time(),
        actions=[action],
    )


def task_pods(kube: KubeEnv, node: str) -> list[dict[str, Any]]:
    listed = kube.client.get(
        f"/api/v1/namespaces/{kube.namespace}/pods", labelSelector=f"{task_pod.LABEL_CONTROLLED_BY}={node}"
    ) or {"items": []}
    return list(listed["items"])


async def test_a_task_pod_runs_and_its_exit_code_and_log_come_back(
    kube: KubeEnv, kubelet: Kubelet, injector: Injector
) -> None:
    container = {
        "name": "probe",
        "image": "python:3.12",
        "command": [PY, "-c"],
        "args": ["import os; print('state=' + os.environ['WANT'])"],
        "env": [{"name": "WANT", "value": "ok"}],
    }
    cmd = task_command(kube, "check-abcde", container)
    started = time.monotonic()
    res = await run(injector, cmd)
    took = time.monotonic() - started
    assert res.ok and res.exit_code == 0 and res.stdout == "state=ok\n", res
    pods = task_pods(kube, "check-abcde")
    assert len(pods) == 1, pods
    pod = pods[0]
    uid = cmd.actions[0].fault.workflow_node_uid  # type: ignore[union-attr]
    assert pod["metadata"]["name"] == task_pod.pod_name("check-abcde", uid)
    assert pod["metadata"]["labels"] == {"chaos-mesh.org/workflow": "wf", "chaos-mesh.org/controlled-by": "check-abcde"}
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "WorkflowNode",
            "name": "check-abcde",
            "uid": uid,
            "controller": True,
        }
    ]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["status"]["phase"] == "Succeeded"  # kept, as Chaos Mesh keeps it, for `kubectl logs`
    assert took < 10, f"a one-line task took {took:.1f}s"


async def test_a_failing_command_gives_its_exit_code(kube: KubeEnv, kubelet: Kubelet, injector: Injector) -> None:
    container = {"name": "task", "image": "busybox", "command": [PY, "-c", "print('broken'); raise SystemExit(3)"]}
    res = await run(injector, task_command(kube, "fail-abcde", container))
    assert res.ok and res.exit_code == 3 and res.stdout == "broken\n", res
    assert "exited with code 3" in res.message
    assert [p["status"]["phase"] for p in task_pods(kube, "fail-abcde")] == ["Failed"]


async def test_a_task_past_its_timeout_is_deleted_and_fails_clearly(
    kube: KubeEnv, kubelet: Kubelet, injector: Injector
) -> None:
    container = {"name": "task", "image": "busybox", "command": [PY, "-c", "import time; time.sleep(120)"]}
    started = time.monotonic()
    res = await run(injector, task_command(kube, "slow-abcde", container, timeout_s=2.0))
    assert not res.ok and res.exit_code is None, res
    assert "did not finish before the step's timeout" in res.message and "Pod deleted" in res.message, res.message
    assert time.monotonic() - started < 60  # cut at its 2 s timeout, far short of the task's 120 s
    kube.client.wait_for(lambda: not task_pods(kube, "slow-abcde"), timeout=10, what="timed-out task pod deleted")
    kube.client.wait_for(lambda: not kubelet.pods, timeout=10, what="its process stopped by the kubelet")


async def test_a_spec_the_api_refuses_fails_with_its_reason(
    kube: KubeEnv, kubelet: Kubelet, injector: Injector
) -> None:
    container = {"name": "Bad_Name", "image": "busybox", "command": ["true"]}
    res = await run(injector, task_command(kube, "bad-abcde", container))
    assert not res.ok and not res.retryable, res
    assert "could not be created: HTTP 422" in res.message and "spec.containers[0].name" in res.message, res.message
    assert task_pods(kube, "bad-abcde") == []


async def test_a_command_resent_after_a_restart_reattaches_to_the_first_pod(
    kube: KubeEnv, kubelet: Kubelet, injector: Injector
) -> None:
    container = {"name": "task", "image": "busybox", "command": [PY, "-c", "import time; time.sleep(1); print('once')"]}
    cmd = task_command(kube, "again-abcde", container)
    assert injector.node is not None
    # The first life journaled its intent and created the Pod, then died while waiting for it.
    await injector.node.run_in_thread(injector.node.executor.begin, cmd, injector.node.halt)
    fault = cmd.actions[0].fault
    assert isinstance(fault, m.Task)
    first = kube.client.create(
        f"/api/v1/namespaces/{kube.namespace}/pods", task_pod.pod_body(kube.namespace, "again-abcde", fault)
    )
    await injector.stop()
    node = await injector.start()
    entry = node.journal.get(jr.entry_key(cmd.experiment_uid, ".", f"{kube.namespace}/again-abcde"))
    assert entry is not None and entry.state == jr.RECOVERED and "interrupted" in entry.reason, entry
    res = await run(injector, cmd)  # never acked, so JetStream redelivers it
    assert res.ok and res.exit_code == 0 and res.stdout == "once\n", res
    pods = task_pods(kube, "again-abcde")
    assert [p["metadata"]["uid"] for p in pods] == [first["metadata"]["uid"]], "a second Pod was created"
    resent = msgspec.structs.replace(cmd, command_id=f"{cmd.experiment_uid}.task.resent")  # a restarted scheduler
    again = await run(injector, resent)  # once done, a repeat neither runs nor creates anything
    assert again.ok and again.exit_code is None and "already done" in again.message, again
    assert len(task_pods(kube, "again-abcde")) == 1


async def test_an_image_that_can_never_be_pulled_fails_at_once_and_its_pod_goes(
    kube: KubeEnv, kubelet: Kubelet, injector: Injector
) -> None:
    container = {"name": "task", "image": "Busybox:Latest", "command": ["true"]}
    started = time.monotonic()
    res = await run(injector, task_command(kube, "img-abcde", container, timeout_s=60.0))
    assert not res.ok and "cannot start (InvalidImageName: " in res.message, res.message
    assert time.monotonic() - started < 10, "failed at the timeout, not at once"
    kube.client.wait_for(lambda: not task_pods(kube, "img-abcde"), timeout=10, what="the stuck Pod deleted")


@pytest.mark.parametrize(
    ("namespace", "owner", "why"),
    [
        ("no-such-namespace", None, 'could not be created: HTTP 404: namespaces "no-such-namespace" not found'),
        (None, "someone-else-abcde", "exists and belongs to something else"),
    ],
)
async def test_a_pod_that_cannot_be_ours_fails_clearly(
    kube: KubeEnv, kubelet: Kubelet, injector: Injector, namespace: str | None, owner: str | None, why: str
) -> None:
    container = {"name": "task", "image": "busybox", "command": ["true"]}
    cmd = task_command(kube, "own-abcde", container)
    if namespace is not None:
        cmd = msgspec.structs.replace(cmd, namespace=namespace)
    if owner is not None:  # a Pod of that name already there, owned by another WorkflowNode
        fault = cmd.actions[0].fault
        assert isinstance(fault, m.Task)
        theirs = task_pod.pod_body(
            kube.namespace,
            "own-abcde",
            msgspec.structs.replace(fault, workflow_node_uid=workflow_node_uid(kube, owner)),
        )
        theirs["metadata"]["name"] = task_pod.pod_name("own-abcde", fault.workflow_node_uid)
        kube.client.create(f"/api/v1/namespaces/{kube.namespace}/pods", theirs)
    res = await run(injector, cmd)
    assert not res.ok and not res.retryable and why in res.message, res.message
