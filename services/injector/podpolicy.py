"""The Pods the cluster injector may create for Workflow Task steps: nothing a Task could use to
reach beyond its own namespace's ordinary workloads. Whoever sent the command, the Pod is refused
when it asks for privileged containers, added capabilities, privilege escalation, host
namespaces (network, PID, IPC), host ports or hostPath volumes (roughly the Pod Security
Standards' "baseline" level), or when its namespace is protected or outside the allow-list.
Pure: judged on the Pod body about to be sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")


@dataclass(frozen=True)
class TaskPodPolicy:
    """`namespaces`: where Task Pods may go (None: the Workflow's own, whatever it is, unless protected)."""

    protected: frozenset[str] = frozenset()
    namespaces: frozenset[str] | None = None


def refusal(policy: TaskPodPolicy, namespace: str, body: dict[str, Any]) -> str | None:
    """Why this Task Pod must not be created (None: it may)."""
    if namespace in policy.protected:
        return f"namespace {namespace} is protected: no Task Pod is created there (PROTECTED_NAMESPACES)"
    if policy.namespaces is not None and namespace not in policy.namespaces:
        allowed = ", ".join(sorted(policy.namespaces)) or "none"
        return f"namespace {namespace} is not one where Task Pods may run (CHAOSBUS_TASK_NAMESPACES: {allowed})"
    spec = body.get("spec") or {}
    for field in HOST_NAMESPACES:
        if spec.get(field):
            return f"spec.{field}: a Task Pod never shares the node's namespaces"
    for i, volume in enumerate(spec.get("volumes") or []):
        if isinstance(volume, dict) and "hostPath" in volume:
            return f"spec.volumes[{i}] ({volume.get('name', '?')}): hostPath volumes are refused in Task Pods"
    for path, container in _containers(spec):
        why = _container_refusal(container)
        if why is not None:
            return f"{path}.{why}"
    return None


def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in CONTAINER_LISTS:
        for i, c in enumerate(spec.get(field) or []):
            if isinstance(c, dict):
                yield f"spec.{field}[{i}]", c


def _container_refusal(container: dict[str, Any]) -> str | None:
    for i, port in enumerate(container.get("ports") or []):
        if isinstance(port, dict) and port.get("hostPort"):
            return f"ports[{i}].hostPort: a Task Pod never binds a port of the node"
    sc = container.get("securityContext") or {}
    if not isinstance(sc, dict):
        return "securityContext: not an object"
    if sc.get("privileged"):
        return "securityContext.privileged: privileged Task Pods are refused"
    if sc.get("allowPrivilegeEscalation"):
        return "securityContext.allowPrivilegeEscalation: refused in Task Pods"
    caps = sc.get("capabilities") or {}
    if isinstance(caps, dict) and caps.get("add"):
        return f"securityContext.capabilities.add: added capabilities {caps['add']} are refused in Task Pods"
    if sc.get("procMount") not in (None, "Default"):
        return "securityContext.procMount: only the default /proc mask is allowed in Task Pods"
    return None
