"""End to end through the Kubernetes API: API server (the fake, or CHAOSBUS_TEST_KUBECONFIG), a real
nats-server, and the four services as processes (watcher and recorder in --kube mode). Pods are
played by the kubelet helper: real processes in real network namespaces, `process://` IDs.
A NetworkChaos partition applied as YAML takes effect in the kernel, its status and Events are
written back through the API, and deleting it recovers the targets before the finalizer goes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.signing import write_keys
from kube.conftest import KubeEnv
from kube.kubelet import Kubelet, KubePod

from chaosbus.common import natsserver
from chaosbus.common import netns as nsutil

pytestmark = pytest.mark.privileged
NODE = f"kube-e2e-{os.getpid() % 10000}"
BRIDGE, SUBNET = f"cbk{os.getpid() % 10000}", f"10.217.{os.getpid() % 250}.0/24"
SERVER = (
    "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 8080))\ns.listen(64)\nwhile True:\n    s.accept()[0].close()\n"
)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    if shutil.which("nft") is None:
        return "needs nft"
    return None


def _connect(ip: str) -> bool:
    try:
        with socket.create_connection((ip, 8080), timeout=0.3):
            return True
    except OSError:
        return False


def connects(src: KubePod, dst: KubePod) -> bool:
    assert src.netns is not None
    return bool(nsutil.run_in_netns(nsutil.netns_path(src.netns), _connect, dst.ip))


@pytest.fixture
def system(kube: KubeEnv, tmp_path: Path) -> Iterator[tuple[KubeEnv, Kubelet, list[KubePod]]]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    server = natsserver.start(tmp_path / "nats", port=0)
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        "CLUSTER_SCOPED": "false",
        "TARGET_NAMESPACE": kube.namespace,
        "CHAOSBUS_KEYS_DIR": str(write_keys(tmp_path / "keys")),
    }
    base = ["--nats", server.url, "--metrics-port", "0"]
    argv = {
        "watcher": ["--kubeconfig", str(kube.kubeconfig), "--target-namespace", kube.namespace],
        "scheduler": [],
        "injector": ["--node", NODE, "--journal", str(tmp_path / "journal.db")],
        "recorder": ["--kubeconfig", str(kube.kubeconfig)],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"chaosbus.{name}", *base, *extra],
            env=env,
            stdout=(logs / f"{name}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for name, extra in argv.items()
    }
    kubelet = Kubelet(kube.client, NODE, bridge=BRIDGE, subnet=SUBNET)
    try:
        kubelet.register_node()
        pods = [
            kubelet.run_pod(
                f"peer-{i}",
                kube.namespace,
                {"app": "peer", "index": str(i)},
                containers={"main": [sys.executable, "-c", SERVER]},
                netns=True,
            )
            for i in range(3)
        ]
        kube.client.wait_for(
            lambda: all(connects(a, b) for a in pods for b in pods if a is not b), what="pods up", timeout=30
        )
        kube.client.wait_for(
            lambda: all("ready" in (logs / f"{n}.log").read_text() for n in procs), timeout=90, what="services ready"
        )
        yield kube, kubelet, pods
    finally:
        kubelet.close()
        for proc in procs.values():
            proc.terminate()
        for name, proc in procs.items():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            if os.environ.get("CHAOSBUS_E2E_LOGS"):
                print(f"--- {name}\n{(logs / f'{name}.log').read_text()}")
        server.stop()


PARTITION = """
apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: cut-peer-1
spec:
  action: partition
  mode: all
  selector:
    labelSelectors: {index: "0"}
  direction: both
  target:
    mode: all
    selector:
      labelSelectors: {index: "1"}
"""


def test_partition_applied_recorded_and_recovered_through_the_api(
    system: tuple[KubeEnv, Kubelet, list[KubePod]],
) -> None:
    kube, _, pods = system
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/networkchaos/cut-peer-1"
    kube.client.apply_yaml(PARTITION, kube.namespace)

    def status() -> dict[str, Any]:
        obj = kube.client.get(path) or {}
        return obj.get("status") or {}

    kube.client.wait_for(
        lambda: not connects(pods[0], pods[1]) and not connects(pods[1], pods[0]), what="partition in the kernel"
    )
    assert connects(pods[0], pods[2]) and connects(pods[2], pods[1])
    kube.client.wait_for(
        lambda: {c["type"]: c["status"] for c in status().get("conditions", [])}.get("AllInjected") == "True",
        what="AllInjected",
    )
    records = status()["experiment"]["containerRecords"]
    assert sorted((r["id"], r["selectorKey"], r["phase"], r["injectedCount"]) for r in records) == [
        (f"{kube.namespace}/peer-0", ".", "Injected", 1),
        (f"{kube.namespace}/peer-1", ".Target", "Injected", 1),
    ]
    # chaosbus's summary fields beside Chaos Mesh's: the PHASE / INJECTED / TOTAL printer columns
    assert (status()["phase"], status()["injected"], status()["total"]) == ("Running", 2, 2)
    obj = kube.client.get(path)
    assert obj is not None and obj["metadata"]["finalizers"] == ["chaos-mesh/records"]
    assert obj["metadata"]["generation"] == 1

    def reasons() -> list[str]:
        items = kube.client.request(
            "GET",
            f"/api/v1/namespaces/{kube.namespace}/events",
            query={"fieldSelector": "involvedObject.kind=NetworkChaos,involvedObject.name=cut-peer-1"},
        )["items"]
        return [e["reason"] for e in items]

    kube.client.wait_for(lambda: {"Started", "Applied"} <= set(reasons()), what="Events")

    kube.client.delete(path)
    kube.client.wait_for(lambda: kube.client.get(path) is None, timeout=20, what="finalizer removed")
    assert connects(pods[0], pods[1]) and connects(pods[1], pods[0])  # recovered before the object went
    kube.client.wait_for(lambda: {"Deleted", "Recovered"} <= set(reasons()), what="Events")


SCHEDULE = """
apiVersion: chaos-mesh.org/v1alpha1
kind: Schedule
metadata:
  name: cut-every-2s
spec:
  schedule: "@every 2s"
  type: NetworkChaos
  historyLimit: 2
  concurrencyPolicy: Forbid
  networkChaos:
    action: partition
    mode: all
    duration: 1s
    selector:
      labelSelectors: {index: "0"}
    direction: to
    target:
      mode: all
      selector:
        labelSelectors: {index: "2"}
"""


def test_schedule_creates_owned_children_through_the_api_and_deleting_it_removes_them(
    system: tuple[KubeEnv, Kubelet, list[KubePod]],
) -> None:
    kube, _, pods = system
    base = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}"
    kube.client.apply_yaml(SCHEDULE, kube.namespace)
    schedule = kube.client.get(f"{base}/schedules/cut-every-2s")
    assert schedule is not None

    def children() -> list[dict[str, Any]]:
        items = kube.client.request("GET", f"{base}/networkchaos", query={"labelSelector": "managed-by=cut-every-2s"})[
            "items"
        ]
        return list(items)

    seen: set[str] = set()

    def two_fired() -> bool:
        seen.update(c["metadata"]["name"] for c in children())
        return len(seen) >= 2

    kube.client.wait_for(two_fired, timeout=20, what="two children")
    child = children()[0]
    assert child["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "Schedule",
            "name": "cut-every-2s",
            "uid": schedule["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert child["spec"]["duration"] == "1s" and child["metadata"]["name"].startswith("cut-every-2s-")
    kube.client.wait_for(lambda: not connects(pods[0], pods[2]), timeout=10, what="a child's partition in the kernel")

    def status() -> dict[str, Any]:
        return (kube.client.get(f"{base}/schedules/cut-every-2s") or {}).get("status") or {}

    kube.client.wait_for(lambda: status().get("time") and status().get("active"), what="Schedule status")
    active = {r["name"] for r in status()["active"]}
    seen.update(c["metadata"]["name"] for c in children())  # read after the status: it may have fired since
    assert active <= seen

    kube.client.delete(f"{base}/schedules/cut-every-2s")
    kube.client.wait_for(lambda: children() == [], timeout=20, what="children deleted")
    kube.client.wait_for(lambda: connects(pods[0], pods[2]), timeout=10, what="no fault left")


def test_workflow_runs_through_the_api_with_nodes_children_and_status(
    system: tuple[KubeEnv, Kubelet, list[KubePod]],
) -> None:
    import http.server
    import threading

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    health = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=health.serve_forever, daemon=True).start()
    kube, _, pods = system
    base = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}"
    try:
        kube.client.apply_yaml(WORKFLOW.replace("PORT", str(health.server_address[1])), kube.namespace)

        def items(plural: str) -> list[dict[str, Any]]:
            found = kube.client.request(
                "GET", f"{base}/{plural}", query={"labelSelector": "chaos-mesh.org/workflow=wf-api"}
            )["items"]
            return list(found)

        # The step's object first (it exists before its partition and goes at the step's deadline).
        (chaos,) = kube.client.wait_for(lambda: items("networkchaos"), timeout=20, what="the cut step's object")
        (cut,) = [n for n in items("workflownodes") if n["spec"]["templateName"] == "cut"]
        kube.client.wait_for(lambda: not connects(pods[0], pods[2]), timeout=12, what="the cut step in the kernel")
        assert chaos["metadata"]["ownerReferences"][0]["uid"] == cut["metadata"]["uid"]
        assert chaos["metadata"]["labels"]["chaos-mesh.org/controlled-by"] == cut["metadata"]["name"]

        def wf_status() -> dict[str, Any]:
            return (kube.client.get(f"{base}/workflows/wf-api") or {}).get("status") or {}

        kube.client.wait_for(
            lambda: {c["type"]: c["status"] for c in wf_status().get("conditions", [])}.get("Accomplished") == "True",
            timeout=45,
            what="workflow accomplished",
        )
        assert connects(pods[0], pods[2])
        # Deleted at the step's deadline, the step's object is gone once its recovery is recorded and
        # its finalizer removed: a path of its own, which may end just after the workflow's status.
        kube.client.wait_for(lambda: items("networkchaos") == [], timeout=15, what="the cut step's object gone")
        (check,) = items("statuschecks")
        conds = {c["type"]: c["status"] for c in check["status"]["conditions"]}
        assert conds["SuccessThresholdExceed"] == "True" and check["status"]["records"][0]["outcome"] == "Success"
        assert len(items("workflownodes")) == 3 and wf_status()["entryNode"].startswith("entry-")
    finally:
        health.shutdown()
        health.server_close()


WORKFLOW = """
apiVersion: chaos-mesh.org/v1alpha1
kind: Workflow
metadata: {name: wf-api}
spec:
  entry: entry
  templates:
  - {name: entry, templateType: Serial, deadline: 60s, children: [cut, probe]}
  - name: cut
    templateType: NetworkChaos
    deadline: 12s  # its object read and its partition seen while it lasts
    networkChaos:
      action: partition
      mode: all
      direction: to
      selector: {labelSelectors: {index: "0"}}
      target: {mode: all, selector: {labelSelectors: {index: "2"}}}
  - name: probe
    templateType: StatusCheck
    deadline: 20s
    abortWithStatusCheck: true
    statusCheck:
      mode: Synchronous
      type: HTTP
      intervalSeconds: 1
      http: {url: "http://127.0.0.1:PORT/", criteria: {statusCode: "200"}}
"""
