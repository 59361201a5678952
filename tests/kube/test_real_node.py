"""Cluster mode on a real node (tests/kube/node.py: kubelet + containerd, local images): the
chaosbus services run on the host against the session's control plane, and the faults land on real
pods. pod-kill deletes a real pod and its Deployment replaces it with a new one that runs;
pod-failure makes the real container run the pause image and, when the experiment is deleted, the
container comes back with its own image; container-kill (through the node injector and containerd)
kills the real container and kubelet restarts it; a NetworkChaos partition between two real pods, applied by
a node injector named after the kubelet's node that resolves `containerd://` IDs through the real
CRI socket, cuts their real TCP traffic and deleting it restores the traffic; a Workflow Task runs as
a real Pod and its real log picks the branch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.signing import write_keys
from kube.conftest import KubeEnv
from kube.node import BUSYBOX_IMAGE, PAUSE_IMAGE, Node, connects, container_pid

from chaosbus.common import natsserver

pytestmark = pytest.mark.integration
Obj = dict[str, Any]


@dataclass
class Cluster:
    kube: KubeEnv
    node: Node
    logs: Path
    nats_url: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def ns(self) -> str:
        return self.kube.namespace

    def pods(self, app: str) -> list[Obj]:
        items: list[Obj] = self.kube.client.request(
            "GET", f"/api/v1/namespaces/{self.ns}/pods", query={"labelSelector": f"app={app}"}
        )["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def running(self, app: str) -> list[Obj]:
        return [
            p
            for p in self.pods(app)
            if (p.get("status") or {}).get("phase") == "Running"
            and all(c.get("ready") for c in p["status"].get("containerStatuses", []))
        ]

    def chaos(self, name: str) -> Obj:
        return self.kube.client.get(f"/apis/chaos-mesh.org/v1alpha1/namespaces/{self.ns}/podchaos/{name}") or {}

    def log(self) -> str:
        return "\n".join(f"--- {n}\n{(self.logs / f'{n}.log').read_text()[-3000:]}" for n in self.procs)


def deployment(name: str, replicas: int, command: list[str] | None = None) -> Obj:
    """Pods of the busybox image; without `command` they run the image's own (sleep), so that
    pod-failure's pause image runs its own program too."""
    container: Obj = {"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never"}
    if command:
        container["command"] = command
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [container],
                },
            },
        },
    }


@pytest.fixture
def cluster(kube: KubeEnv, real_node: Node, tmp_path: Path) -> Iterator[Cluster]:
    kube.need_real("pods on a real kubelet")
    server = natsserver.start(tmp_path / "nats", port=0)
    logs = tmp_path / "logs"
    logs.mkdir()
    c = Cluster(kube, real_node, logs, server.url)
    env = {
        **os.environ,
        "CLUSTER_SCOPED": "false",
        "TARGET_NAMESPACE": kube.namespace,
        "POD_FAILURE_PAUSE_IMAGE": PAUSE_IMAGE,
        "CHAOSBUS_KEYS_DIR": str(write_keys(tmp_path / "keys")),
    }
    kc = str(kube.kubeconfig)
    argv = {
        "watcher": ["watcher", "--kubeconfig", kc],
        "recorder": ["recorder", "--kubeconfig", kc],
        "scheduler": ["scheduler", "--cluster-injector"],
        "injector": ["injector", "--cluster", "--kubeconfig", kc, "--journal", str(tmp_path / "journal.db")],
    }
    try:
        for name, (module, *extra) in argv.items():
            c.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"chaosbus.{module}", "--nats", server.url, "--metrics-port", "0", *extra],
                env=env,
                stdout=(logs / f"{name}.log").open("w"),
                stderr=subprocess.STDOUT,
            )
        kube.client.wait_for(
            lambda: all(f"{n} ready" in (logs / f"{n}.log").read_text() for n in c.procs),
            timeout=90,
            what="services ready",
        )
        yield c
    finally:
        for proc in c.procs.values():
            proc.terminate()
        for proc in c.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()


def apply(c: Cluster, text: str) -> None:
    c.kube.client.apply_yaml(text, c.ns)


def test_pod_kill_deletes_a_real_pod_and_its_deployment_replaces_it(cluster: Cluster) -> None:
    c, client = cluster, cluster.kube.client
    client.create(f"/apis/apps/v1/namespaces/{c.ns}/deployments", deployment("web", 2, ["sleep", "3600"]))
    before = client.wait_for(
        lambda: len(c.running("web")) == 2 and c.running("web"), timeout=60, what="2 web pods running"
    )
    uids = {p["metadata"]["uid"] for p in before}
    apply(
        c,
        yaml.safe_dump(
            {
                "apiVersion": "chaos-mesh.org/v1alpha1",
                "kind": "PodChaos",
                "metadata": {"name": "kill-one"},
                "spec": {"action": "pod-kill", "mode": "one", "selector": {"labelSelectors": {"app": "web"}}},
            }
        ),
    )
    try:
        client.wait_for(
            lambda: len(uids & {p["metadata"]["uid"] for p in c.pods("web")}) == 1,
            timeout=30,
            what=f"one of the real pods deleted\n{c.log()}",
        )
        after = client.wait_for(
            lambda: len(c.running("web")) == 2 and c.running("web"),
            timeout=60,
            what="the Deployment's replacement running",
        )
        replaced = {p["metadata"]["uid"] for p in after} - uids
        assert len(replaced) == 1
        [new] = [p for p in after if p["metadata"]["uid"] in replaced]
        assert new["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")
        records = client.wait_for(
            lambda: (c.chaos("kill-one").get("status") or {}).get("experiment", {}).get("containerRecords"),
            timeout=30,
            what="records",
        )
        assert [r["phase"] for r in records] == ["Injected"]
    finally:
        client.delete(f"/apis/apps/v1/namespaces/{c.ns}/deployments/web")


def test_pod_failure_runs_the_pause_image_in_the_real_container_and_recovery_restores_it(cluster: Cluster) -> None:
    c, client = cluster, cluster.kube.client
    client.create(f"/apis/apps/v1/namespaces/{c.ns}/deployments", deployment("db", 1))
    [pod] = client.wait_for(lambda: len(c.running("db")) == 1 and c.running("db"), timeout=60, what="db running")
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    path = f"/api/v1/namespaces/{c.ns}/pods/{name}"

    def status() -> Obj:
        got: Obj = (client.get(path) or {}).get("status", {}).get("containerStatuses", [{}])[0]
        return got

    apply(
        c,
        yaml.safe_dump(
            {
                "apiVersion": "chaos-mesh.org/v1alpha1",
                "kind": "PodChaos",
                "metadata": {"name": "fail-db"},
                "spec": {"action": "pod-failure", "mode": "all", "selector": {"labelSelectors": {"app": "db"}}},
            }
        ),
    )
    try:
        paused = client.wait_for(
            lambda: status().get("image") == PAUSE_IMAGE and status().get("state", {}).get("running") and status(),
            timeout=60,
            what=f"the real container running the pause image\n{c.log()}\n{client.get(path)}",
        )
        assert paused["restartCount"] >= 1
        assert (client.get(path) or {})["metadata"]["uid"] == uid  # the same pod, its container restarted
        client.delete(f"/apis/chaos-mesh.org/v1alpha1/namespaces/{c.ns}/podchaos/fail-db")
        client.wait_for(
            lambda: status().get("image") == BUSYBOX_IMAGE and status().get("state", {}).get("running"),
            timeout=60,
            what=f"the container back on its own image\n{c.log()}",
        )
        client.wait_for(lambda: not c.chaos("fail-db"), timeout=30, what="finalizer removed, object gone")
    finally:
        client.delete(f"/apis/apps/v1/namespaces/{c.ns}/deployments/db")


def start_node_injector(c: Cluster, tmp_path: Path) -> None:
    """The node injector on the host as the DaemonSet would run it: named after the kubelet's node,
    resolving containerd:// IDs through the real CRI socket."""
    c.procs["node-injector"] = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaosbus.injector",
            "--nats",
            c.nats_url,
            "--metrics-port",
            "0",
            "--node",
            c.node.name,
            "--mode",
            "cluster",
            "--containerd-socket",
            str(c.node.socket),
            "--journal",
            str(tmp_path / "node-journal.db"),
        ],
        env={
            **os.environ,
            "CLUSTER_SCOPED": "false",
            "TARGET_NAMESPACE": c.ns,
            "CHAOSBUS_KEYS_DIR": str(tmp_path / "keys"),
        },  # written by the `cluster` fixture
        stdout=(c.logs / "node-injector.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    c.kube.client.wait_for(
        lambda: "injector ready" in (c.logs / "node-injector.log").read_text(), timeout=60, what="node injector ready"
    )


def test_container_kill_restarts_the_real_container(cluster: Cluster, tmp_path: Path) -> None:
    c, client = cluster, cluster.kube.client
    start_node_injector(c, tmp_path)
    client.create(f"/apis/apps/v1/namespaces/{c.ns}/deployments", deployment("cache", 1))
    try:
        [pod] = client.wait_for(
            lambda: len(c.running("cache")) == 1 and c.running("cache"), timeout=60, what="cache running"
        )
        path = f"/api/v1/namespaces/{c.ns}/pods/{pod['metadata']['name']}"
        before = pod["status"]["containerStatuses"][0]
        pid = container_pid(c.node, before["containerID"])
        apply(
            c,
            yaml.safe_dump(
                {
                    "apiVersion": "chaos-mesh.org/v1alpha1",
                    "kind": "PodChaos",
                    "metadata": {"name": "kill-main"},
                    "spec": {
                        "action": "container-kill",
                        "mode": "one",
                        "containerNames": ["main"],
                        "selector": {"labelSelectors": {"app": "cache"}},
                    },
                }
            ),
        )

        def restarted() -> Obj | None:
            now: Obj = ((client.get(path) or {}).get("status") or {}).get("containerStatuses", [{}])[0]
            return now if now.get("restartCount", 0) >= 1 and now.get("state", {}).get("running") else None

        after = client.wait_for(restarted, timeout=60, what=f"the real container restarted\n{c.log()}")
        assert not Path(f"/proc/{pid}").exists()  # the old process is gone, killed through containerd
        assert after["containerID"] != before["containerID"]
        assert (client.get(path) or {})["metadata"]["uid"] == pod["metadata"]["uid"]  # same pod
    finally:
        client.delete(f"/apis/apps/v1/namespaces/{c.ns}/deployments/cache")


def test_partition_between_two_real_pods_cuts_their_traffic_and_recovery_restores_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    c, client = cluster, cluster.kube.client
    start_node_injector(c, tmp_path)
    client.create(
        f"/apis/apps/v1/namespaces/{c.ns}/deployments", deployment("server", 1, ["httpd", "-f", "-p", "8080"])
    )
    client.create(f"/apis/apps/v1/namespaces/{c.ns}/deployments", deployment("client", 1))
    try:
        [server] = client.wait_for(
            lambda: len(c.running("server")) == 1 and c.running("server"), timeout=60, what="server running"
        )
        [peer] = client.wait_for(
            lambda: len(c.running("client")) == 1 and c.running("client"), timeout=60, what="client running"
        )
        ip, pid = (
            server["status"]["podIP"],
            container_pid(c.node, peer["status"]["containerStatuses"][0]["containerID"]),
        )
        assert client.wait_for(lambda: connects(pid, ip, 8080), timeout=20, what="client reaches server")
        apply(
            c,
            yaml.safe_dump(
                {
                    "apiVersion": "chaos-mesh.org/v1alpha1",
                    "kind": "NetworkChaos",
                    "metadata": {"name": "cut"},
                    "spec": {
                        "action": "partition",
                        "mode": "all",
                        "direction": "both",
                        "selector": {"labelSelectors": {"app": "server"}},
                        "target": {"mode": "all", "selector": {"labelSelectors": {"app": "client"}}},
                    },
                }
            ),
        )
        client.wait_for(
            lambda: not connects(pid, ip, 8080), timeout=30, what=f"the partition cutting real traffic\n{c.log()}"
        )
        client.delete(f"/apis/chaos-mesh.org/v1alpha1/namespaces/{c.ns}/networkchaos/cut")
        client.wait_for(lambda: connects(pid, ip, 8080), timeout=30, what=f"traffic restored\n{c.log()}")
    finally:
        for name in ("server", "client"):
            client.delete(f"/apis/apps/v1/namespaces/{c.ns}/deployments/{name}")


def test_a_workflow_task_runs_as_a_real_pod_and_its_real_log_picks_the_branch(cluster: Cluster) -> None:
    c, client = cluster, cluster.kube.client
    base = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{c.ns}"
    # The Task Pod mounts a service-account token; this API server build's ServiceAccount admission
    # adds this ConfigMap to the token volume and nothing publishes it.
    client.create(
        f"/api/v1/namespaces/{c.ns}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "openshift-service-ca.crt"},
            "data": {"service-ca.crt": ""},
        },
    )
    task = {
        "container": {
            "name": "decide",
            "image": BUSYBOX_IMAGE,
            "imagePullPolicy": "Never",
            "command": ["sh", "-c"],
            "args": ["echo $ANSWER"],
            "env": [{"name": "ANSWER", "value": "go-left"}],
        }
    }
    apply(
        c,
        yaml.safe_dump(
            {
                "apiVersion": "chaos-mesh.org/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": "wf-task"},
                "spec": {
                    "entry": "entry",
                    "templates": [
                        {
                            "name": "entry",
                            "templateType": "Task",
                            "deadline": "60s",
                            "task": task,
                            "conditionalBranches": [
                                {"target": "left", "expression": 'stdout == "go-left" && exitCode == 0'},
                                {"target": "right", "expression": 'stdout != "go-left"'},
                            ],
                        },
                        {"name": "left", "templateType": "Suspend", "deadline": "1s"},
                        {"name": "right", "templateType": "Suspend", "deadline": "1s"},
                    ],
                },
            }
        ),
    )

    def nodes() -> dict[str, Obj]:
        found = client.request(
            "GET", f"{base}/workflownodes", query={"labelSelector": "chaos-mesh.org/workflow=wf-task"}
        )["items"]
        return {n["spec"]["templateName"]: n for n in found}

    def accomplished() -> bool:
        conds = ((client.get(f"{base}/workflows/wf-task") or {}).get("status") or {}).get("conditions") or []
        return any(x["type"] == "Accomplished" and x["status"] == "True" for x in conds)

    client.wait_for(accomplished, timeout=90, what=f"workflow accomplished\n{c.log()}\n{nodes()}")
    found = nodes()
    assert set(found) == {"entry", "left"}, "only the branch the real Task Pod's log chose may run"
    branches = found["entry"]["status"]["conditionalBranchesStatus"]
    assert json.loads(branches["context"][0]) == {"exitCode": 0, "stdout": "go-left\n"}
    pods = client.request(
        "GET",
        f"/api/v1/namespaces/{c.ns}/pods",
        query={"labelSelector": f"chaos-mesh.org/controlled-by={found['entry']['metadata']['name']}"},
    )["items"]
    for pod in pods:  # a real kubelet ran it (the cluster injector may already have deleted it)
        assert pod["spec"]["nodeName"] == c.node.name
