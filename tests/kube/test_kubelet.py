"""The kubelet helper against the API (fake or real): Pods bound to a node, running real processes,
with `process://<pid>` container IDs in their status; graceful deletion finished by the helper.
"""

from __future__ import annotations

import psutil
from kube.conftest import KubeEnv
from kube.kubelet import Kubelet


def test_pods_run_real_processes_and_report_them(kube: KubeEnv) -> None:
    kubelet = Kubelet(kube.client, "node-k1")
    try:
        kubelet.register_node({"zone": "a"})
        pod = kubelet.run_pod(
            "web-0", kube.namespace, {"app": "web"}, containers={"main": ["sleep", "300"], "side": ["sleep", "301"]}
        )
        obj = kube.client.get(pod.path)
        assert obj is not None
        assert obj["spec"]["nodeName"] == "node-k1"
        assert obj["status"]["phase"] == "Running" and obj["status"]["podIP"] == pod.ip
        ids = {c["name"]: c["containerID"] for c in obj["status"]["containerStatuses"]}
        assert ids == {"main": f"process://{pod.pid('main')}", "side": f"process://{pod.pid('side')}"}
        assert all(psutil.pid_exists(int(i.removeprefix("process://"))) for i in ids.values())
        listed = kube.client.request(
            "GET",
            f"/api/v1/namespaces/{kube.namespace}/pods",
            query={"fieldSelector": "spec.nodeName=node-k1", "labelSelector": "app=web"},
        )
        assert [p["metadata"]["name"] for p in listed["items"]] == ["web-0"]
    finally:
        kubelet.close()


def test_graceful_delete_is_finished_by_the_kubelet(kube: KubeEnv) -> None:
    kubelet = Kubelet(kube.client, "node-k1")
    try:
        pod = kubelet.run_pod("web-1", kube.namespace, {"app": "web"})
        pid = pod.pid()
        deleted = kube.client.delete(pod.path)
        assert deleted["metadata"]["deletionTimestamp"]
        assert kube.client.get(pod.path) is not None  # Terminating until the kubelet confirms
        assert kubelet.reap() == ["web-1"]
        assert kube.client.get(pod.path) is None
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        kubelet.close()
