"""The pure parts of the cluster injector's Task Pods: the Pod built from a Task step (name,
labels, owner, restartPolicy, the container and volumes as given) and what a Pod's status says
about the step (exit code, a Pod that ended without one, a container that can never start).
"""

from __future__ import annotations

import pytest

from chaosbus.common import messages as m
from chaosbus.injector.faults import FaultError
from chaosbus.injector.faults.task_pod import pod_body, pod_name, progress

CONTAINER = {
    "name": "check",
    "image": "curlimages/curl:8.8.0",
    "command": ["curl"],
    "args": ["-s", "http://web"],
    "env": [{"name": "A", "value": "1"}],
    "workingDir": "/tmp",
    "resources": {"limits": {"cpu": "100m"}},
    "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}],
}
VOLUMES = [{"name": "cfg", "configMap": {"name": "probe-config"}}]


def task(**kw: object) -> m.Task:
    base: dict[str, object] = {
        "argv": ["curl", "-s", "http://web"],
        "container": CONTAINER,
        "volumes": VOLUMES,
        "workflow": "wf",
        "workflow_node_uid": "uid-1",
    }
    return m.Task(**{**base, **kw})  # type: ignore[arg-type]


def test_the_pod_runs_the_template_container_once_owned_by_the_workflow_node() -> None:
    pod = pod_body("ns1", "check-abcde", task())
    assert pod["metadata"] == {
        "name": pod_name("check-abcde", "uid-1"),
        "namespace": "ns1",
        "labels": {"chaos-mesh.org/controlled-by": "check-abcde", "chaos-mesh.org/workflow": "wf"},
        "ownerReferences": [
            {
                "apiVersion": "chaos-mesh.org/v1alpha1",
                "kind": "WorkflowNode",
                "name": "check-abcde",
                "uid": "uid-1",
                "controller": True,
            }
        ],
    }
    assert pod["spec"] == {"restartPolicy": "Never", "containers": [CONTAINER], "volumes": VOLUMES}


def test_the_pod_name_is_stable_per_node_and_differs_for_a_recreated_node() -> None:
    assert pod_name("check-abcde", "uid-1") == pod_name("check-abcde", "uid-1")
    assert pod_name("check-abcde", "uid-1") != pod_name("check-abcde", "uid-2")
    assert pod_name("check-abcde", "uid-1").startswith("check-abcde-task-")
    assert len(pod_name("x" * 253, "uid-1")) <= 253


def test_a_container_without_a_name_is_called_task_and_nothing_else_is_added() -> None:
    pod = pod_body("ns1", "n", task(container={"image": "busybox", "command": ["true"]}, volumes=[]))
    assert pod["spec"] == {
        "restartPolicy": "Never",
        "containers": [{"name": "task", "image": "busybox", "command": ["true"]}],
    }


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"container": {"command": ["true"]}}, "task.container.image"), ({"workflow_node_uid": ""}, "WorkflowNode uid")],
)
def test_a_task_missing_what_a_pod_needs_fails_naming_it(kw: dict[str, object], field: str) -> None:
    with pytest.raises(FaultError) as e:
        pod_body("ns1", "n", task(**kw))
    assert field in e.value.message and not e.value.retryable


def status(phase: str, state: dict[str, object], **extra: object) -> dict[str, object]:
    return {"status": {"phase": phase, "containerStatuses": [{"name": "task", "state": state}], **extra}}


def test_a_finished_pod_gives_the_task_container_exit_code() -> None:
    assert progress(status("Succeeded", {"terminated": {"exitCode": 0}})).exit_code == 0
    two = {
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "sidecar", "state": {"terminated": {"exitCode": 1}}},
                {"name": "check", "state": {"terminated": {"exitCode": 5}}},
            ],
        }
    }
    assert progress(two, "check").exit_code == 5
    failed = progress(status("Failed", {"terminated": {"exitCode": 7, "reason": "Error"}}))
    assert failed.done and failed.exit_code == 7 and not failed.problem


def test_a_pod_that_ended_without_an_exit_code_is_a_problem_with_its_reason() -> None:
    evicted = progress({"status": {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}})
    assert evicted.done and evicted.exit_code is None
    assert evicted.problem == "the Pod Failed without a container exit code (Evicted: low on memory)"


def test_a_container_that_can_never_start_ends_the_step_and_a_pull_backoff_waits() -> None:
    bad = progress(status("Pending", {"waiting": {"reason": "InvalidImageName", "message": "bad ref"}}))
    assert bad.done and bad.exit_code is None and "InvalidImageName: bad ref" in bad.problem
    backoff = progress(status("Pending", {"waiting": {"reason": "ImagePullBackOff"}}))
    assert not backoff.done and backoff.state == "Pending, waiting: ImagePullBackOff"
    assert not progress({"metadata": {}}).done and not progress(status("Running", {"running": {}})).done
