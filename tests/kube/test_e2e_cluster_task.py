"""End to end in cluster mode: a Workflow whose Task step runs as a Pod. API fake, a real
nats-server, watcher --kube, recorder --kube, scheduler --cluster-injector and injector --cluster
as processes; the test kubelet runs the Task Pod's command and serves its log. The Task's stdout
picks the conditional branch: that branch's step runs (the other does not), the Task's
WorkflowNode records exit code and stdout as Chaos Mesh does, and the workflow is Accomplished.
A Task whose Pod the API refuses records the API's reason and takes its `exitCode != 0` branch.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube.conftest import KubeEnv
from kube.kubelet import Kubelet
from kube.test_e2e_cluster_injector import System

from chaosbus.common import natsserver

pytestmark = pytest.mark.integration

WORKFLOW = """
apiVersion: chaos-mesh.org/v1alpha1
kind: Workflow
metadata: {name: wf-task}
spec:
  entry: entry
  templates:
  - name: entry
    templateType: Task
    deadline: 30s
    task:
      container:
        name: decide
        image: python:3.12-slim
        command: [PYTHON, -c]
        args: ["import os; print(os.environ['ANSWER'])"]
        env: [{name: ANSWER, value: go-left}]
    conditionalBranches:
    - {target: left, expression: 'stdout == "go-left" && exitCode == 0'}
    - {target: right, expression: 'stdout != "go-left"'}
  - {name: left, templateType: Suspend, deadline: 1s}
  - {name: right, templateType: Suspend, deadline: 1s}
"""
REFUSED = """
apiVersion: chaos-mesh.org/v1alpha1
kind: Workflow
metadata: {name: wf-refused}
spec:
  entry: entry
  templates:
  - name: entry
    templateType: Task
    deadline: 30s
    task:
      container: {name: Not_A_Name, image: busybox, command: ["true"]}
    conditionalBranches:
    - {target: ok, expression: 'exitCode == 0'}
    - {target: failed, expression: 'exitCode != 0'}
  - {name: ok, templateType: Suspend, deadline: 1s}
  - {name: failed, templateType: Suspend, deadline: 1s}
"""


@pytest.fixture
def system(kube: KubeEnv, tmp_path: Path) -> Iterator[System]:
    fake = kube.need_fake("the test kubelet runs the Task Pod and serves its log through the fake")
    server = natsserver.start(tmp_path / "nats", port=0)
    logs = tmp_path / "logs"
    logs.mkdir()
    kubelet = Kubelet(kube.client, "task-e2e", logs=fake.set_container_log)
    sys_ = System(kube, kubelet, logs, server.url, tmp_path)
    try:
        with kubelet.running(0.05):
            sys_.start_cluster_services()
            kube.client.wait_for(lambda: all(sys_.ready(n) for n in sys_.procs), timeout=90, what="services ready")
            yield sys_
    finally:
        kubelet.close()
        sys_.stop()
        server.stop()


def test_a_task_pods_stdout_picks_the_branch_that_runs(system: System) -> None:
    kube = system.kube
    base = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}"

    def nodes(workflow: str) -> dict[str, dict[str, Any]]:
        found = kube.client.request(
            "GET", f"{base}/workflownodes", query={"labelSelector": f"chaos-mesh.org/workflow={workflow}"}
        )["items"]
        return {n["spec"]["templateName"]: n for n in found}

    def accomplished(workflow: str) -> bool:
        conds = ((kube.client.get(f"{base}/workflows/{workflow}") or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Accomplished" and c["status"] == "True" for c in conds)

    kube.client.apply_yaml(WORKFLOW.replace("PYTHON", sys.executable), kube.namespace)
    kube.client.apply_yaml(REFUSED, kube.namespace)
    kube.client.wait_for(
        lambda: accomplished("wf-task") and accomplished("wf-refused"), timeout=30, what="both workflows accomplished"
    )
    # A Pod the API refuses: the step fails with the API's reason in the node's status, and moves on.
    refused = nodes("wf-refused")
    assert set(refused) == {"entry", "failed"}
    context = json.loads(refused["entry"]["status"]["conditionalBranchesStatus"]["context"][0])
    assert context["exitCode"] == -1 and "HTTP 422" in context["error"] and "Not_A_Name" in context["error"], context
    found = nodes("wf-task")
    assert set(found) == {"entry", "left"}, "only the branch the Task's stdout chose may run"
    entry = found["entry"]
    cbs = entry["status"]["conditionalBranchesStatus"]
    assert json.loads(cbs["context"][0]) == {"exitCode": 0, "stdout": "go-left\n"}
    assert [(b["target"], b["evaluationResult"]) for b in cbs["branches"]] == [("left", "True"), ("right", "False")]
    conds = {c["type"]: c["status"] for c in entry["status"]["conditions"]}
    assert conds["Accomplished"] == "True"
    pods = kube.client.request(
        "GET",
        f"/api/v1/namespaces/{kube.namespace}/pods",
        query={"labelSelector": f"chaos-mesh.org/controlled-by={entry['metadata']['name']}"},
    )
    (pod,) = pods["items"]
    assert pod["metadata"]["labels"]["chaos-mesh.org/workflow"] == "wf-task"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == entry["metadata"]["uid"]
    assert pod["status"]["phase"] == "Succeeded" and pod["spec"]["restartPolicy"] == "Never"
