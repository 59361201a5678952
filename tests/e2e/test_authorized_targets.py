"""Authorized targets on the live local system: an experiment in `team-a` naming `kube-system` is
refused in its status and the kube-system pod is untouched.
"""

from __future__ import annotations

import json
import sys

import psutil
import pytest
import yaml
from helpers.live import BRIDGE, SUBNET, System, eventually

from chaosbus.common import processid

pytestmark = pytest.mark.privileged


def pid_of(system: System, namespace: str, name: str) -> int:
    obj = json.loads(system.cli("pod", "list", "-n", namespace, "-o", "json").stdout)
    [pod] = [p for p in obj if p["metadata"]["name"] == name]
    ident = processid.parse(pod["status"]["containerStatuses"][0]["containerID"])
    assert ident is not None
    return ident.pid


def get(system: System, kind: str, name: str, namespace: str) -> dict[str, object]:
    done = system.cli("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def test_team_a_cannot_kill_a_kube_system_pod(system: System) -> None:
    system.cli("pod", "run", "--name", "coredns", "-n", "kube-system", "-l", "k8s-app=kube-dns",
               "--bridge", BRIDGE, "--subnet", SUBNET, "--", sys.executable, "-m", "chaosbus.cli.demoapp", "serve",
               "--name", "coredns")
    try:
        pid = pid_of(system, "kube-system", "coredns")
        system.cli("apply", "-n", "team-a", "-f", "-", stdin=yaml.safe_dump({
            "apiVersion": "chaos-mesh.org/v1alpha1", "kind": "PodChaos", "metadata": {"name": "kill-dns"},
            "spec": {"action": "pod-kill", "mode": "all",
                     "selector": {"namespaces": ["kube-system"], "labelSelectors": {"k8s-app": "kube-dns"}}}}))

        def selected() -> dict[str, object] | None:
            status = get(system, "podchaos", "kill-dns", "team-a").get("status") or {}
            conditions = status.get("conditions") or []  # type: ignore[union-attr]
            return next((c for c in conditions if c["type"] == "Selected" and c["status"] == "False"), None)

        condition = eventually(selected, timeout=10)
        assert condition["reason"] == "SelectionFailed"
        assert "namespace 'kube-system' is protected" in str(condition["message"])
        status = get(system, "podchaos", "kill-dns", "team-a")["status"]
        assert not (status["experiment"].get("containerRecords") or [])  # type: ignore[index]
        assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        pods = json.loads(system.cli("pod", "list", "-n", "kube-system", "-o", "json").stdout)
        assert [p["status"]["containerStatuses"][0]["restartCount"] for p in pods
                if p["metadata"]["name"] == "coredns"] == [0]
        system.cli("delete", "podchaos", "kill-dns", "-n", "team-a")
    finally:
        system.cli("pod", "rm", "coredns", "-n", "kube-system", check=False)
