"""What the cluster injector's faults need from the Kubernetes API, as a small synchronous
interface (faults run in worker threads): read a Pod, JSON-patch it, delete it, and for Workflow
Task Pods create one and read its container's log. The kubernetes
edge (`cluster.py`) implements it; keeping it here lets fault modules stay free of the client.
"""

from __future__ import annotations

from typing import Any, Protocol

Pod = dict[str, Any]


class PodApiError(Exception):
    """The API refused a request (`status` is the HTTP status) or could not be reached (0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status, self.message = status, message


class PodApi(Protocol):
    def get(self, namespace: str, name: str) -> Pod | None:
        """The Pod as the API's JSON, None if there is none."""
        ...

    def json_patch(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> Pod:
        """Apply a JSON patch (RFC 6902); raises PodApiError (404 gone, 422 a failed test op)."""
        ...

    def delete(self, namespace: str, name: str, *, grace_period: int, uid: str) -> Pod | None:
        """Delete with this grace period, only if the Pod still has `uid` (409 otherwise);
        None if there was no such Pod.
        """
        ...

    def create(self, namespace: str, body: Pod) -> Pod:
        """Create a Pod; raises PodApiError (409 one of that name exists, 422 invalid, 403 refused)."""
        ...

    def log(self, namespace: str, name: str, container: str, limit_bytes: int) -> str:
        """The first `limit_bytes` of a container's log (`pods/{name}/log`), decoded as UTF-8."""
        ...


def gone_reason(pod: Pod | None, namespace: str, name: str, uid: str) -> str | None:
    """Why the target Pod is gone for good (None: it is the one the experiment selected)."""
    if pod is None:
        return f"target gone: pod {namespace}/{name} no longer exists"
    current = (pod.get("metadata") or {}).get("uid", "")
    if uid and current != uid:
        return f"target gone: pod {namespace}/{name} was replaced (uid {current}, selected {uid})"
    return None
