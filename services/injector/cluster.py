"""The cluster injector's Kubernetes edge (`injector --cluster`): the API-level faults, pod-kill
(delete with `gracePeriod`) and pod-failure (pause images), and Workflow Task steps run as Pods
(`faults/task_pod.py`), done through kubernetes-asyncio.

Everything else is the node injector's machinery unchanged: the same journal (intent before
effect), start-up reconcile, self-expiry at the deadline, dead-man lease, kill switch and outbox,
under the fixed node name `subjects.CLUSTER_NODE`, so the scheduler's commands and leases for
API-level faults reach it on `chaos.cmd._cluster` / `chaos.lease._cluster`. Targets are Pods by
namespace, name and uid: nothing is resolved on a node (no PIDs, no namespaces).

Faults run in worker threads; `KubePods` hands each request to the event loop that owns the
API client and waits for the answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

from kubernetes_asyncio import client

from chaosbus.common import settings
from chaosbus.injector import faults, podpatch, runtime
from chaosbus.injector.faults.api_pod_kill import ApiPodKill
from chaosbus.injector.faults.pod_failure import PodFailure
from chaosbus.injector.faults.task_pod import TaskPod
from chaosbus.injector.podapi import Pod, PodApi, PodApiError
from chaosbus.injector.podpolicy import TaskPodPolicy

T = TypeVar("T")
PAUSE_IMAGE_ENV = "POD_FAILURE_PAUSE_IMAGE"  # Chaos Mesh's controller setting, same name
REQUEST_TIMEOUT_S = 30.0
JSON_PATCH: dict[str, Any] = {"_content_type": "application/json-patch+json"}


class KubePods:
    """`podapi.PodApi` over kubernetes-asyncio, callable from worker threads (never from the loop)."""

    def __init__(self, api: client.ApiClient, loop: asyncio.AbstractEventLoop) -> None:
        self.core, self.loop = client.CoreV1Api(api), loop

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:  # waiting here would block the loop that has to answer
            coro.close()
            raise RuntimeError("KubePods is synchronous: call it from a worker thread, not the event loop")
        try:
            return asyncio.run_coroutine_threadsafe(coro, self.loop).result(REQUEST_TIMEOUT_S + 5)
        except PodApiError:
            raise
        except Exception as e:  # unreachable API server, timeout: worth a retry
            raise PodApiError(0, f"Kubernetes API unreachable: {e or type(e).__name__}") from e

    def get(self, namespace: str, name: str) -> Pod | None:
        async def go() -> Pod | None:
            resp = await self.core.read_namespaced_pod(
                name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
            )
            return None if resp.status == 404 else await _body(resp)

        return self._call(go())

    def json_patch(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> Pod:
        async def go() -> Pod:
            resp = await self.core.patch_namespaced_pod(
                name, namespace, ops, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S, **JSON_PATCH
            )
            pod = await _body(resp)
            assert pod is not None
            return pod

        return self._call(go())

    def delete(self, namespace: str, name: str, *, grace_period: int, uid: str) -> Pod | None:
        if not uid:  # never a delete by name alone: it could hit a Pod nobody selected
            raise PodApiError(412, f"refused: deleting pod {namespace}/{name} needs its uid as a precondition")

        async def go() -> Pod | None:
            body = client.V1DeleteOptions(
                grace_period_seconds=grace_period, preconditions=client.V1Preconditions(uid=uid)
            )
            resp = await self.core.delete_namespaced_pod(
                name,
                namespace,
                body=body,
                grace_period_seconds=grace_period,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
            return None if resp.status == 404 else await _body(resp)

        return self._call(go())

    def create(self, namespace: str, body: Pod) -> Pod:
        async def go() -> Pod:
            raw_body: Any = body  # the API's JSON as is: the typed V1Pod would drop unknown fields
            resp = await self.core.create_namespaced_pod(
                namespace, raw_body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
            )
            pod = await _body(resp)
            assert pod is not None
            return pod

        return self._call(go())

    def log(self, namespace: str, name: str, container: str, limit_bytes: int) -> str:
        async def go() -> str:
            resp: Any = await self.core.read_namespaced_pod_log(
                name,
                namespace,
                container=container,
                limit_bytes=max(1, limit_bytes),
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
            raw = await resp.read()
            if not 200 <= resp.status <= 299:
                _body_of(resp.status, resp.reason, raw)
            return bytes(raw[:limit_bytes]).decode("utf-8", "replace")

        return self._call(go())


async def _body(resp: Any) -> Pod | None:
    """The JSON body of a 2xx answer; PodApiError with the server's message otherwise."""
    return _body_of(resp.status, resp.reason, await resp.read())


def _body_of(status: int, reason: Any, raw: bytes) -> Pod | None:
    """The JSON object of a 2xx answer; PodApiError with the server's message otherwise."""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = raw.decode(errors="replace")
    if not 200 <= status <= 299:
        message = data.get("message", "") if isinstance(data, dict) else str(data)
        raise PodApiError(status, message or str(reason))
    return data if isinstance(data, dict) else None


def registry(pods: PodApi, pause_image: str, tasks: TaskPodPolicy | None = None) -> dict[str, faults.Fault]:
    """The faults this injector performs, by tag; `tasks`: where and how Task Pods may run."""
    return {f.name: f for f in (ApiPodKill(pods), PodFailure(pods, pause_image), TaskPod(pods, policy=tasks))}


def resolve_pod_only(container_id: str) -> runtime.ContainerHandle:
    """The cluster injector acts on Pods, not on containers of this machine: nothing to resolve.
    A handle without a pid leaves the journaled identity free of processes and namespaces.
    """
    return runtime.ContainerHandle(container_id=container_id, pid=0, netns_path="", mnt_ns_path="", alive=False)


def pause_image(explicit: str | None) -> str:
    return explicit or settings.current().pod_failure_pause_image or podpatch.DEFAULT_PAUSE_IMAGE
