"""End to end through the Kubernetes API with the cluster injector: API server (the fake, or
CHAOSBUS_TEST_KUBECONFIG), a real nats-server, watcher --kube, recorder --kube, scheduler
--cluster-injector and injector --cluster as processes. Pods are played by the kubelet helper.

PodChaos pod-kill deletes the Pod with its gracePeriod and the record says Injected; pod-failure
pauses every image (originals in Chaos Mesh's annotations), survives a SIGKILLed cluster injector,
and deleting the experiment restores the images before the finalizer goes; with a duration the
images come back on their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers.signing import write_keys
from kube.conftest import KubeEnv
from kube.kubelet import Kubelet

from chaosbus.common import natsserver

pytestmark = pytest.mark.integration
NODE = f"kube-ci-{os.getpid() % 10000}"
PAUSE = "registry.k8s.io/pause:3.9"
ORIGINAL = "chaosbus/process:test"  # what the kubelet helper puts in every container


@dataclass
class System:
    kube: KubeEnv
    kubelet: Kubelet
    logs: Path
    nats_url: str
    tmp: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, module: str, *extra: str) -> None:
        env = {
            **os.environ,
            "CLUSTER_SCOPED": "false",
            "TARGET_NAMESPACE": self.kube.namespace,
            "POD_FAILURE_PAUSE_IMAGE": PAUSE,
            "CHAOSBUS_KEYS_DIR": str(write_keys(self.tmp / "keys")),
        }
        out = (self.logs / f"{name}.log").open("a")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"chaosbus.{module}", "--nats", self.nats_url, "--metrics-port", "0", *extra],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def start_cluster_services(self) -> None:
        """Watcher and recorder on the API, the scheduler routing API-level faults, the cluster injector."""
        self.start("watcher", "watcher", "--kubeconfig", str(self.kube.kubeconfig))
        self.start("recorder", "recorder", "--kubeconfig", str(self.kube.kubeconfig))
        self.start("scheduler", "scheduler", "--cluster-injector")
        self.start_cluster_injector()

    def start_cluster_injector(self) -> None:
        self.start(
            "injector",
            "injector",
            "--cluster",
            "--kubeconfig",
            str(self.kube.kubeconfig),
            "--journal",
            str(self.tmp / "cluster-journal.db"),
        )

    def stop(self) -> None:
        """Terminate every service (kill what does not stop in 15 s); print logs if asked."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for name, proc in self.procs.items():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if os.environ.get("CHAOSBUS_E2E_LOGS"):
                print(f"--- {name}\n{(self.logs / f'{name}.log').read_text()}")

    def ready(self, name: str, count: int = 1) -> bool:
        return (self.logs / f"{name}.log").read_text().count(f"{name} ready") >= count

    def chaos(self, name: str) -> dict[str, Any]:
        return self.kube.client.get(self.path(name)) or {}

    def path(self, name: str) -> str:
        return f"/apis/chaos-mesh.org/v1alpha1/namespaces/{self.kube.namespace}/podchaos/{name}"

    def pod(self, name: str) -> dict[str, Any] | None:
        return self.kube.client.get(f"/api/v1/namespaces/{self.kube.namespace}/pods/{name}")


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions", [])}


def records(obj: dict[str, Any]) -> list[tuple[str, str]]:
    recs = ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []
    return sorted((r["id"], r["phase"]) for r in recs)


def images(pod: dict[str, Any] | None) -> list[str]:
    return [c["image"] for c in (pod or {}).get("spec", {}).get("containers", [])]


def failure_annotations(pod: dict[str, Any] | None) -> dict[str, str]:
    return {k: v for k, v in ((pod or {}).get("metadata", {}).get("annotations") or {}).items() if "pod-failure" in k}


@pytest.fixture
def system(kube: KubeEnv, tmp_path: Path) -> Iterator[System]:
    server = natsserver.start(tmp_path / "nats", port=0)
    logs = tmp_path / "logs"
    logs.mkdir()
    kubelet = Kubelet(kube.client, NODE)
    sys_ = System(kube, kubelet, logs, server.url, tmp_path)
    try:
        sys_.start_cluster_services()
        kubelet.register_node()
        for i in range(2):
            kubelet.run_pod(
                f"web-{i}",
                kube.namespace,
                {"app": "web", "index": str(i)},
                containers={
                    "main": [sys.executable, "-c", "import time; time.sleep(600)"],
                    "side": [sys.executable, "-c", "import time; time.sleep(600)"],
                },
            )
        kube.client.wait_for(lambda: all(sys_.ready(n) for n in sys_.procs), timeout=90, what="services ready")
        yield sys_
    finally:
        kubelet.close()
        sys_.stop()
        server.stop()


POD_KILL = """
apiVersion: chaos-mesh.org/v1alpha1
kind: PodChaos
metadata:
  name: kill-web-0
spec:
  action: pod-kill
  mode: one
  gracePeriod: 3
  selector:
    labelSelectors: {index: "0"}
"""

POD_FAILURE = """
apiVersion: chaos-mesh.org/v1alpha1
kind: PodChaos
metadata:
  name: fail-web
spec:
  action: pod-failure
  mode: all
  selector:
    labelSelectors: {app: web}
"""


def test_pod_kill_deletes_the_pod_with_its_grace_period(system: System) -> None:
    kube = system.kube
    uid = (system.pod("web-0") or {})["metadata"]["uid"]
    kube.client.apply_yaml(POD_KILL, kube.namespace)
    pod = kube.client.wait_for(
        lambda: (p := system.pod("web-0")) and p["metadata"].get("deletionTimestamp") and p, timeout=30, what="pod-kill"
    )
    assert pod["metadata"]["uid"] == uid and pod["metadata"]["deletionGracePeriodSeconds"] == 3
    if kube.fake is not None:
        assert any(m == "DELETE" and p.endswith("/pods/web-0?gracePeriodSeconds=3") for m, p in kube.fake.requests)
    kube.client.wait_for(
        lambda: conditions(system.chaos("kill-web-0")).get("AllInjected") == "True", timeout=30, what="AllInjected"
    )
    assert records(system.chaos("kill-web-0")) == [(f"{kube.namespace}/web-0", "Injected")]
    assert system.kubelet.reap() == ["web-0"]  # the kubelet finishes the graceful deletion
    assert system.pod("web-0") is None and system.pod("web-1") is not None


def test_pod_failure_survives_an_injector_crash_and_delete_restores(system: System) -> None:
    kube = system.kube
    kube.client.apply_yaml(POD_FAILURE, kube.namespace)
    for name in ("web-0", "web-1"):
        kube.client.wait_for(lambda n=name: images(system.pod(n)) == [PAUSE, PAUSE], timeout=30, what="paused")
        assert failure_annotations(system.pod(name)) == {
            "chaos-mesh-fail-web-pod-failure-main-normal-image": ORIGINAL,
            "chaos-mesh-fail-web-pod-failure-side-normal-image": ORIGINAL,
        }
    kube.client.wait_for(
        lambda: conditions(system.chaos("fail-web")).get("AllInjected") == "True", timeout=30, what="AllInjected"
    )
    assert records(system.chaos("fail-web")) == [
        (f"{kube.namespace}/web-0", "Injected"),
        (f"{kube.namespace}/web-1", "Injected"),
    ]

    system.procs["injector"].send_signal(signal.SIGKILL)  # crash mid-fault
    system.procs["injector"].wait(10)
    system.start_cluster_injector()
    kube.client.wait_for(lambda: system.ready("injector", 2), timeout=60, what="injector restarted")
    assert images(system.pod("web-0")) == [PAUSE, PAUSE]  # still wanted: re-asserted, not recovered

    kube.client.delete(system.path("fail-web"))
    kube.client.wait_for(lambda: kube.client.get(system.path("fail-web")) is None, timeout=40, what="finalizer removed")
    for name in ("web-0", "web-1"):  # restored before the object went
        assert images(system.pod(name)) == [ORIGINAL, ORIGINAL]
        assert failure_annotations(system.pod(name)) == {}


def test_pod_failure_with_a_duration_restores_on_its_own(system: System) -> None:
    kube = system.kube
    kube.client.apply_yaml(
        POD_FAILURE.replace("name: fail-web", "name: fail-brief").replace(
            "action: pod-failure",
            "action: pod-failure\n  duration: 15s",  # seen paused before it ends
        ),
        kube.namespace,
    )
    kube.client.wait_for(lambda: images(system.pod("web-1")) == [PAUSE, PAUSE], timeout=15, what="paused")
    kube.client.wait_for(
        lambda: (
            images(system.pod("web-1")) == [ORIGINAL, ORIGINAL] and images(system.pod("web-0")) == [ORIGINAL, ORIGINAL]
        ),
        timeout=40,
        what="restored",
    )
    kube.client.wait_for(
        lambda: conditions(system.chaos("fail-brief")).get("AllRecovered") == "True", timeout=30, what="AllRecovered"
    )
    assert failure_annotations(system.pod("web-0")) == {}
