"""Cluster mode on a real node: the services against a real control plane (KUBEBUILDER_ASSETS) and a
real node (tests/kube/node.py: kubelet + containerd, local busybox image), a node injector named
after the kubelet's node resolving `containerd://` IDs through the real CRI socket. A Deployment
of N real pods and one peer; each run creates a NetworkChaos partitioning all N from the peer
through the API and times it until the kernel has committed the partition table in every pod's
netns, then deletes it and times until every table is gone. The floor is one API round trip.

Needs root, the envtest binaries and the runtime packages `make install` adds as root; says why and
exits 2 otherwise. `python -m bench.bench_kube_node [--runs N] [--pods N] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.bench_kube import CHAOS, EventClock, _runs, _tests_on_path, figure_rows, services
from bench.kernel import TableMonitor

PODS = 20  # real pods on a 2-core machine beside the control plane; the node holds 110


def missing() -> str | None:
    _tests_on_path()
    from kube.controlplane import assets
    from kube.node import missing as node_missing

    if os.geteuid() != 0:
        return "needs root (a kubelet, containerd, network namespaces, nftables)"
    folder, why = assets()
    if folder is None:
        return f"no control plane binaries: {why}"
    if not (folder / "kubelet").exists() or not (folder / "kube-scheduler").exists():
        return f"{folder} lacks kubelet or kube-scheduler"
    return node_missing()


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    from kube.node import BUSYBOX_IMAGE

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
                    "containers": [
                        {
                            "name": "main",
                            "image": BUSYBOX_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"],
                        }
                    ],
                },
            },
        },
    }


def _running(client: Any, namespace: str, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.request(
        "GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": f"app={app}"}
    )["items"]
    return [
        p
        for p in items
        if (p.get("status") or {}).get("phase") == "Running"
        and all(c.get("ready") for c in p["status"].get("containerStatuses", []))
    ]


def _netns_paths(socket: Path, pods: list[dict[str, Any]]) -> list[str]:
    """Each pod's netns, through its container's host PID from containerd's task list."""
    out = subprocess.run(
        ["ctr", "-a", str(socket), "-n", "k8s.io", "tasks", "ls"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    pids = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()[1:] if line.strip()}
    return [
        f"/proc/{pids[p['status']['containerStatuses'][0]['containerID'].removeprefix('containerd://')]}/ns/net"
        for p in pods
    ]


def measure(runs: int, pods: int) -> dict[str, Any]:
    _tests_on_path()
    from kube.client import KubeClient
    from kube.controlplane import ControlPlane, assets
    from kube.crds import install_crds
    from kube.node import running_node

    from chaosbus.common import natsserver
    from chaosbus.injector.faults.partition import table_name

    folder, why = assets()
    assert folder is not None, why
    namespace = f"cbbench-node-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="chaosbus-bench-node-") as tmp:
        work = Path(tmp)
        (work / "plane").mkdir()
        plane = ControlPlane(folder, work / "plane").start()
        monitor = TableMonitor()
        try:
            client = KubeClient(plane.kubeconfig)
            install_crds(client)
            client.create(
                "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            )
            (work / "node").mkdir()
            with running_node(plane, work / "node") as node:
                server = natsserver.start(work / "nats")
                try:
                    deployments = f"/apis/apps/v1/namespaces/{namespace}/deployments"
                    started = time.monotonic()
                    client.create(deployments, _deployment("peer", 1))
                    client.create(deployments, _deployment("target", pods))
                    targets = client.wait_for(
                        lambda: (
                            len(_running(client, namespace, "target")) == pods and _running(client, namespace, "target")
                        ),
                        timeout=60 + pods * 5,
                        what=f"{pods} real pods running",
                    )
                    client.wait_for(lambda: _running(client, namespace, "peer"), timeout=60, what="peer running")
                    pods_up = time.monotonic() - started
                    paths = _netns_paths(node.socket, targets)
                    for path in paths:
                        monitor.watch(path)
                    monitor.start()
                    clock = EventClock(server.url)
                    with services(
                        plane.kubeconfig,
                        namespace,
                        server.url,
                        work,
                        ("--node", node.name, "--mode", "cluster", "--containerd-socket", str(node.socket)),
                    ):
                        chaos = {
                            **CHAOS,
                            "spec": {
                                **CHAOS["spec"],
                                "selector": {"labelSelectors": {"app": "target"}},
                                "target": {"mode": "all", "selector": {"labelSelectors": {"app": "peer"}}},
                            },
                        }
                        figures = _runs(client, monitor, paths, namespace, runs, table_name, clock, "bench-node", chaos)
                    client.delete(f"{deployments}/target")
                    client.delete(f"{deployments}/peer")
                finally:
                    server.stop()
            return figures | {"pods": pods, "pods_up_s": pods_up}
        finally:
            monitor.close()
            plane.stop()


def rows(raw: dict[str, Any]) -> report.Section:
    n = raw["pods"]
    section = report.Section(
        f"a real node (kubelet + containerd), {n} real pods: create/delete -> kernel "
        f"({n} pods Running {raw['pods_up_s']:.1f} s after their Deployment)"
    )
    figure_rows(section, "node", n, raw)
    return section


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--pods", type=int, default=PODS)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    why = missing()
    if why is not None:
        print(f"bench_kube_node: {why}", file=sys.stderr)
        return 2
    section = rows(measure(args.runs, args.pods))
    print(report.render([section]))
    if args.json:
        args.json.write_text(json.dumps(report.to_json([section]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
