"""The deploy of tests/kube/test_deploy_real_node.py: the overlay a user writes, the Secrets made
as the docs say, what a cluster's storage would provide, and a teardown that leaves the session's
control plane and the host as they were.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kube.client import KubeClient
from kube.controlplane import ControlPlane
from kube.image import Image
from kube.node import BUSYBOX_IMAGE, SNAPSHOTTER, Node

Obj = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
NS = "chaosbus"
# The workloads the checks of test_deploy_real_node rely on (the base may have more: each must be Ready).
ESSENTIAL = {
    "nats",
    "chaosbus-auth",
    "chaosbus-watcher",
    "chaosbus-scheduler",
    "chaosbus-recorder",
    "chaosbus-cluster-injector",
    "chaosbus-injector",
    "chaosbus-dashboard",
    "chaosbus-guard",
}
# PersistentVolumes for the base's claims, as a cluster's storage would provide: (claim, size, owner).
VOLUMES = (("nats-data", "2Gi", 1000), ("cluster-injector-journal", "256Mi", 10001))


@dataclass
class Deployed:
    plane: ControlPlane
    node: Node
    client: KubeClient
    work: Path
    overlay: Path
    targets: str  # the namespace of the busybox pods experiments act on
    expected: dict[str, int] = field(default_factory=dict)  # Ready pods per workload of the base

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            [str(self.plane.bin_dir / "kubectl"), "--kubeconfig", str(self.plane.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
        return proc.stdout

    def pods(self, namespace: str = NS, selector: str = "") -> list[Obj]:
        query = {"labelSelector": selector} if selector else {}
        items: list[Obj] = self.client.request("GET", f"/api/v1/namespaces/{namespace}/pods", query=query)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def ready(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.pods():
            conditions = (p.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                app = p["metadata"]["labels"].get("app.kubernetes.io/name", "")
                counts[app] = counts.get(app, 0) + 1
        return counts

    def diagnosis(self) -> str:
        """Each chaosbus pod's state and its containers' last log lines (what failed, when it does)."""
        out = []
        for p in self.pods():
            name = p["metadata"]["name"]
            statuses = (p.get("status") or {}).get("containerStatuses") or []
            restarts = [s.get("restartCount") for s in statuses]
            out.append(f"--- {name}: restarts {restarts} {json.dumps([s.get('state') for s in statuses])[:600]}")
            for s in statuses:
                out.append(self.kubectl("-n", NS, "logs", name, "-c", s["name"], "--tail=15", check=False)[-2500:])
        events = self.kubectl("-n", NS, "get", "events", "--sort-by=.lastTimestamp", check=False)
        return "\n".join(out) + "\n--- events\n" + "\n".join(events.splitlines()[-25:])

    def eventually(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """`check()`'s first true value within `timeout` seconds; else fail with the pods' state."""
        deadline = time.monotonic() + timeout
        while not (value := check()):
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s: {what}\n{self.diagnosis()}")
            time.sleep(0.5)
        return value

    def secret(self, name: str, key: str) -> str:
        obj = self.client.get(f"/api/v1/namespaces/{NS}/secrets/{name}")
        assert obj is not None, name
        return base64.b64decode(obj["data"][key]).decode()

    def pod_ip(self, app: str) -> str:
        [pod] = [p for p in self.pods(selector=f"app.kubernetes.io/name={app}")][:1]
        ip: str = pod["status"]["podIP"]
        return ip


def overlay(work: Path, chaosbus: Image, nats_img: Image, node: Node) -> Path:
    """The overlay a user writes: where the images are, and where this node's runtime socket is."""
    d = work / "overlay"
    d.mkdir()
    runtime_patch = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "chaosbus-injector", "namespace": NS},
        "spec": {
            "template": {"spec": {"volumes": [{"name": "runtime", "hostPath": {"path": str(node.socket.parent)}}]}}
        },
    }
    kustomization = {
        "resources": [os.path.relpath(ROOT / "deploy" / "k8s", d)],
        "images": [
            {"name": "chaosbus", "newName": chaosbus.repository.removeprefix("docker.io/"), "newTag": chaosbus.tag},
            {"name": "nats", "newName": nats_img.repository.removeprefix("docker.io/"), "newTag": nats_img.tag},
        ],
        "patches": [{"patch": yaml.safe_dump(runtime_patch)}],
    }
    (d / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return d


def import_images(node: Node, *images: Image) -> None:
    for image in images:
        subprocess.run(
            ["ctr", "-a", str(node.socket), "-n", "k8s.io", "images", "import", "--snapshotter", SNAPSHOTTER]
            + [str(image.archive)],
            check=True,
            capture_output=True,
            timeout=300,
        )


def chaosbus_cli(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "chaosbus.cli", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def create_secrets(d: Deployed) -> None:
    """As docs/deploy.md and docs/security.md say, nothing else."""
    d.kubectl("apply", "-f", "-", input=chaosbus_cli("nats-secrets", "--namespace", NS))
    keys = d.work / "chaosbus-keys"
    chaosbus_cli("keys", "generate", str(keys))
    d.kubectl(
        "-n",
        NS,
        "create",
        "secret",
        "generic",
        "chaosbus-scheduler-key",
        f"--from-file=scheduler.key={keys}/scheduler.key",
    )
    d.kubectl(
        "-n",
        NS,
        "create",
        "secret",
        "generic",
        "chaosbus-trust",
        f"--from-file=scheduler.pub={keys}/scheduler.pub",
        f"--from-file=operator.pub={keys}/operator.pub",
        f"--from-file=guard.pub={keys}/guard.pub",
    )
    d.kubectl("-n", NS, "create", "secret", "generic", "chaosbus-guard-key", f"--from-file=guard.key={keys}/guard.key")


def create_volumes(d: Deployed) -> list[str]:
    """Pre-bound hostPath PersistentVolumes on the node, writable by each claim's non-root user
    (a hostPath volume keeps its owner: fsGroup does not apply to it)."""
    names = []
    for claim, size, owner in VOLUMES:
        path = d.node.dir / "volumes" / claim
        path.mkdir(parents=True)
        os.chown(path, owner, owner)
        name = f"{d.node.name}-{claim}"
        d.client.create(
            "/api/v1/persistentvolumes",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "claimRef": {"namespace": NS, "name": claim},
                    "hostPath": {"path": str(path), "type": "Directory"},
                },
            },
        )
        names.append(name)
    return names


def busybox(name: str, command: list[str]) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never", "command": command}
                    ],
                },
            },
        },
    }


def workloads(rendered: str) -> dict[str, int]:
    """Pods per workload of the rendered base: a Deployment's replicas, a DaemonSet's one node."""
    out = {}
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] in ("Deployment", "DaemonSet"):
            name = doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
            out[name] = doc["spec"].get("replicas", 1) if doc["kind"] == "Deployment" else 1
    return out


def wait_ready(d: Deployed) -> None:
    deadline = time.monotonic() + 300
    while d.ready() != d.expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"not every chaosbus pod Ready: {d.ready()} != {d.expected}\n{d.diagnosis()}")
        time.sleep(1)


def teardown(d: Deployed, rendered: str, volumes: list[str], made_journal_dir: bool) -> None:
    """Everything the deploy made, but the CRDs and the admission policy (the session's other tests
    run under them); pods gone before the node is, so kubelet tears their networking down."""
    from kube.conftest import _release_finalizers

    # A chaos object the recorder has not released yet would keep its namespace terminating.
    with contextlib.suppress(Exception):
        _release_finalizers(d.client, d.targets)
    d.kubectl("delete", "namespace", d.targets, "--wait=false", check=False)
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            d.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found", check=False)
    d.kubectl("delete", "namespace", NS, "--wait=false", check=False)
    deadline = time.monotonic() + 90
    while (d.pods() or d.pods(d.targets)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for name in volumes:
        d.kubectl("delete", "persistentvolume", name, "--ignore-not-found", "--wait=false", check=False)
    journal = Path("/var/lib/chaosbus")
    for leftover in journal.glob(f"injector-{d.node.name}.db*"):
        leftover.unlink()
    if made_journal_dir:
        with contextlib.suppress(OSError):
            for sub in sorted(journal.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                sub.rmdir()
            journal.rmdir()
