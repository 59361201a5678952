"""A test stand-in for the kubelet: creates Pods bound to a node, starts each container as a real
process (in its own network namespace when `netns=True`, wired to a test bridge), and reports
status through `pods/status` with `process://<pid>` container IDs, the way a kubelet would.
It also finishes graceful deletions (kills the processes, then deletes with grace 0).

`sync()` (or the `running()` loop) also plays scheduler and kubelet for Pods others create (a
Workflow's Task Pods): each container's `command` + `args` run as a local process (argv, no shell;
`env` values and `workingDir` applied, the image only parsed), stdout and stderr into one file
served as the container's log through the API fake, status Running -> Succeeded/Failed with
`terminated.exitCode` as a kubelet reports it (`StartError`, exit code 128, when the command
cannot start; Pending with `waiting: InvalidImageName` for an image reference that does not
parse). `restartPolicy: Never` is the only policy it honours.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kube.client import KubeClient

SLEEPER = [sys.executable, "-c", "import time\nwhile True: time.sleep(3600)"]
# An image reference as the runtime parses it: [host[:port]/]path[:tag][@digest], path lower case.
_PATH_PART = r"[a-z0-9]+(?:[._-][a-z0-9]+)*"
IMAGE_REF = re.compile(
    rf"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


LogSink = Callable[[str, str, Path], None]  # (pod uid, container, log file): FakeApiServer.set_container_log


@dataclass
class KubePod:
    name: str
    namespace: str
    ip: str
    netns: str | None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    uid: str = ""
    workload: bool = False  # created by someone else and run to completion (a Task Pod)
    start_errors: dict[str, str] = field(default_factory=dict)  # container -> why it could not start
    waiting: dict[str, dict[str, str]] = field(default_factory=dict)  # container -> waiting state, for good
    finished: bool = False

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    def pid(self, container: str = "main") -> int:
        return self.procs[container].pid


class Kubelet:
    def __init__(
        self, client: KubeClient, node: str, *, bridge: str = "", subnet: str = "", logs: LogSink | None = None
    ) -> None:
        self.client, self.node, self.bridge, self.logs = client, node, bridge, logs
        self.log_dir = Path(tempfile.mkdtemp(prefix="kubelet-logs-"))
        self.subnet = ipaddress.IPv4Network(subnet) if subnet else None
        self.pods: dict[tuple[str, str], KubePod] = {}
        self._next_ip = 2

    def register_node(self, labels: dict[str, str] | None = None) -> None:
        if self.client.get(f"/api/v1/nodes/{self.node}") is None:
            self.client.create(
                "/api/v1/nodes",
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node, **(labels or {})}},
                },
            )

    def _allocate_ip(self) -> str:
        if self.subnet is None:
            self._next_ip += 1
            return f"10.254.{self._next_ip // 250}.{self._next_ip % 250 + 2}"
        ip = str(self.subnet.network_address + self._next_ip)
        self._next_ip += 1
        return ip

    def run_pod(
        self,
        name: str,
        namespace: str,
        labels: dict[str, str],
        *,
        containers: dict[str, list[str]] | None = None,
        netns: bool = False,
    ) -> KubePod:
        """Create the Pod, start its containers' processes, and report it Running and ready."""
        containers = containers or {"main": SLEEPER}
        spec = {
            "nodeName": self.node,
            "containers": [{"name": c, "image": "chaosbus/process:test"} for c in containers],
        }
        self.client.create(
            f"/api/v1/namespaces/{namespace}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": spec,
            },
        )
        pod = KubePod(name=name, namespace=namespace, ip=self._allocate_ip(), netns=None)
        self.pods[(namespace, name)] = pod
        if netns:
            from chaosbus.cli import podnet

            assert self.subnet is not None, "netns pods need a bridge and subnet"
            pod.netns = f"cbk-{os.getpid() % 10000}-{name}"[:60]
            podnet.create_pod_network(
                pod.netns, self.bridge, f"{pod.ip}/{self.subnet.prefixlen}", str(self.subnet.network_address + 1)
            )
            for cname, argv in containers.items():
                pod.procs[cname] = podnet.spawn_in_netns(
                    argv, pod.netns, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
        else:
            for cname, argv in containers.items():
                pod.procs[cname] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.report(pod)
        return pod

    def report(self, pod: KubePod) -> dict[str, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        statuses = [
            {
                "name": c,
                "ready": p.poll() is None,
                "restartCount": 0,
                "image": "chaosbus/process:test",
                "imageID": "",
                "containerID": f"process://{p.pid}",
                "started": p.poll() is None,
                "state": {"running": {"startedAt": now}}
                if p.poll() is None
                else {"terminated": {"exitCode": p.returncode or 0}},
            }
            for c, p in pod.procs.items()
        ]
        ready = "True" if all(s["ready"] for s in statuses) else "False"
        status = {
            "phase": "Running",
            "podIP": pod.ip,
            "hostIP": "127.0.0.1",
            "startTime": now,
            "conditions": [
                {"type": t, "status": ready if t in ("Ready", "ContainersReady") else "True", "lastTransitionTime": now}
                for t in ("Ready", "ContainersReady", "Initialized", "PodScheduled")
            ],
            "containerStatuses": statuses,
        }
        result: dict[str, Any] = self.client.merge_patch(pod.path + "/status", {"status": status})
        return result

    # --- Pods created by others (Task Pods) -------------------------------------------------------

    def sync(self) -> None:
        """Start the Pods nobody runs yet, report the ones whose processes ended, forget deleted ones."""
        listed = self.client.get("/api/v1/pods") or {"items": []}
        seen = set()
        for obj in listed["items"]:
            meta, spec = obj["metadata"], obj.get("spec") or {}
            key = (meta["namespace"], meta["name"])
            seen.add(key)
            known = self.pods.get(key)
            if (
                known is None
                and spec.get("nodeName", self.node) in ("", self.node)
                and not meta.get("deletionTimestamp")
                and (obj.get("status") or {}).get("phase") in (None, "", "Pending")
            ):
                self._start_workload(obj)
            elif (
                known is not None
                and known.workload
                and not known.finished
                and not known.waiting
                and all(p.poll() is not None for p in known.procs.values())
            ):
                self._report_workload(known, obj.get("spec") or {})
        for key in [k for k, p in self.pods.items() if p.workload and k not in seen]:
            self._stop(self.pods.pop(key))  # deleted (grace 0): its processes go too

    @contextlib.contextmanager
    def running(self, interval: float = 0.1) -> Iterator[Kubelet]:
        """`sync()` in a background thread for the duration of the block."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval):
                with contextlib.suppress(Exception):  # the API restarting: try again next round
                    self.sync()

        thread = threading.Thread(target=loop, name=f"kubelet-{self.node}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(10)

    def _start_workload(self, obj: dict[str, Any]) -> None:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        pod = KubePod(
            name=meta["name"],
            namespace=meta["namespace"],
            ip=self._allocate_ip(),
            netns=None,
            uid=meta["uid"],
            workload=True,
        )
        self.pods[(pod.namespace, pod.name)] = pod
        for c in spec.get("containers") or []:
            if not IMAGE_REF.match(c.get("image") or ""):  # never created: no log, Pending for good
                pod.waiting[c["name"]] = {
                    "reason": "InvalidImageName",
                    "message": (
                        f'Failed to apply default image tag "{c.get("image", "")}": couldn\'t parse image name '
                        f'"{c.get("image", "")}": invalid reference format'
                    ),
                }
                continue
            argv = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
            log = self.log_dir / f"{pod.uid}-{c['name']}.log"
            env = {**os.environ, **{e["name"]: str(e.get("value", "")) for e in c.get("env") or [] if "name" in e}}
            try:
                if not argv:
                    raise OSError("no command: this kubelet cannot run an image's entrypoint")
                with log.open("wb") as out:
                    pod.procs[c["name"]] = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=c.get("workingDir") or None,
                    )
            except OSError as e:
                log.write_bytes(b"")
                pod.start_errors[c["name"]] = f"failed to start container {c['name']!r}: {e}"
            if self.logs is not None:
                self.logs(pod.uid, c["name"], log)
        self._report_workload(pod, spec)

    def _report_workload(self, pod: KubePod, spec: dict[str, Any]) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        statuses, codes = [], []
        for c in spec.get("containers") or []:
            name, proc = c["name"], pod.procs.get(c["name"])
            code = 128 if proc is None and name not in pod.waiting else None if proc is None else proc.poll()
            state: dict[str, Any] = {"running": {"startedAt": now}}
            if name in pod.waiting:
                state = {"waiting": pod.waiting[name]}
            elif code is not None:
                reason = "StartError" if proc is None else "Completed" if code == 0 else "Error"
                state = {
                    "terminated": {
                        "exitCode": code,
                        "reason": reason,
                        "startedAt": now,
                        "finishedAt": now,
                        **({"message": pod.start_errors[name]} if name in pod.start_errors else {}),
                        **({"containerID": f"process://{proc.pid}"} if proc else {}),
                    }
                }
            codes.append(code)
            statuses.append(
                {
                    "name": name,
                    "image": c.get("image", ""),
                    "imageID": "",
                    "restartCount": 0,
                    "ready": code is None,
                    "started": code is None,
                    "state": state,
                    **({"containerID": f"process://{proc.pid}"} if proc else {}),
                }
            )
        phase = (
            "Pending"
            if pod.waiting
            else "Running"
            if any(x is None for x in codes)
            else "Succeeded"
            if all(x == 0 for x in codes)
            else "Failed"
        )
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": pod.ip,
            "startTime": now,
            "containerStatuses": statuses,
        }
        self.client.merge_patch(pod.path + "/status", {"status": status})
        pod.finished = phase in ("Succeeded", "Failed")

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
