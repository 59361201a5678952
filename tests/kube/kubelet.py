"""A test stand-in for the kubelet: creates Pods bound to a node, starts each container as a real
process (in its own network namespace when `netns=True`, wired to a test bridge), and reports
status through `pods/status` with `process://<pid>` container IDs, the way a kubelet would.
It also finishes graceful deletions (kills the processes, then deletes with grace 0).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kube.client import KubeClient

SLEEPER = [sys.executable, "-c", "import time\nwhile True: time.sleep(3600)"]


@dataclass
class KubePod:
    name: str
    namespace: str
    ip: str
    netns: str | None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    def pid(self, container: str = "main") -> int:
        return self.procs[container].pid


class Kubelet:
    def __init__(self, client: KubeClient, node: str, *, bridge: str = "", subnet: str = "") -> None:
        self.client, self.node, self.bridge = client, node, bridge
        self.subnet = ipaddress.IPv4Network(subnet) if subnet else None
        self.pods: dict[tuple[str, str], KubePod] = {}
        self._next_ip = 2

    def register_node(self, labels: dict[str, str] | None = None) -> None:
        if self.client.get(f"/api/v1/nodes/{self.node}") is None:
            self.client.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": self.node, "labels": {"kubernetes.io/hostname": self.node, **(labels or {})}}})

    def _allocate_ip(self) -> str:
        if self.subnet is None:
            self._next_ip += 1
            return f"10.254.{self._next_ip // 250}.{self._next_ip % 250 + 2}"
        ip = str(self.subnet.network_address + self._next_ip)
        self._next_ip += 1
        return ip

    def run_pod(self, name: str, namespace: str, labels: dict[str, str], *,
                containers: dict[str, list[str]] | None = None, netns: bool = False) -> KubePod:
        """Create the Pod, start its containers' processes, and report it Running and ready."""
        containers = containers or {"main": SLEEPER}
        spec = {"nodeName": self.node,
                "containers": [{"name": c, "image": "chaosbus/process:test"} for c in containers]}
        self.client.create(f"/api/v1/namespaces/{namespace}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": spec})
        pod = KubePod(name=name, namespace=namespace, ip=self._allocate_ip(), netns=None)
        self.pods[(namespace, name)] = pod
        if netns:
            from chaosbus.cli import podnet

            assert self.subnet is not None, "netns pods need a bridge and subnet"
            pod.netns = f"cbk-{os.getpid() % 10000}-{name}"[:60]
            podnet.create_pod_network(pod.netns, self.bridge, f"{pod.ip}/{self.subnet.prefixlen}",
                                      str(self.subnet.network_address + 1))
            for cname, argv in containers.items():
                pod.procs[cname] = podnet.spawn_in_netns(argv, pod.netns, stdout=subprocess.DEVNULL,
                                                         stderr=subprocess.DEVNULL)
        else:
            for cname, argv in containers.items():
                pod.procs[cname] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.report(pod)
        return pod

    def report(self, pod: KubePod) -> dict[str, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        statuses = [{"name": c, "ready": p.poll() is None, "restartCount": 0, "image": "chaosbus/process:test",
                     "imageID": "", "containerID": f"process://{p.pid}", "started": p.poll() is None,
                     "state": {"running": {"startedAt": now}} if p.poll() is None else {"terminated": {
                         "exitCode": p.returncode or 0}}}
                    for c, p in pod.procs.items()]
        ready = "True" if all(s["ready"] for s in statuses) else "False"
        status = {"phase": "Running", "podIP": pod.ip, "hostIP": "127.0.0.1", "startTime": now,
                  "conditions": [{"type": t, "status": ready if t in ("Ready", "ContainersReady") else "True",
                                  "lastTransitionTime": now} for t in ("Ready", "ContainersReady", "Initialized",
                                                                       "PodScheduled")],
                  "containerStatuses": statuses}
        result: dict[str, Any] = self.client.merge_patch(pod.path + "/status", {"status": status})
        return result

    def reap(self) -> list[str]:
        """Finish graceful deletions of this node's pods: stop the processes, delete with grace 0."""
        done = []
        for (ns, name), pod in list(self.pods.items()):
            obj = self.client.get(pod.path)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                self._stop(pod)
                if obj is not None:
                    self.client.delete(pod.path, gracePeriodSeconds="0")
                del self.pods[(ns, name)]
                done.append(name)
        return done

    def _stop(self, pod: KubePod) -> None:
        for proc in pod.procs.values():
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        if pod.netns:
            from chaosbus.cli import podnet

            podnet.delete_pod_network(pod.netns)

    def close(self) -> None:
        for pod in list(self.pods.values()):
            self._stop(pod)
            with contextlib.suppress(Exception):
                self.client.delete(pod.path, gracePeriodSeconds="0")
        self.pods.clear()
        if self.bridge:
            from chaosbus.cli import podnet

            with contextlib.suppress(Exception):
                podnet.delete_bridge_if_unused(self.bridge)
