"""CRI adapter (containerd, CRI-O): `runtime.v1.RuntimeService` over the runtime's unix socket.

Two calls, both unary gRPC with a deadline so a hung runtime costs a target at most `timeout`
seconds: `ContainerStatus` with `verbose=true` (the state, and the PID from the verbose
`info["info"]` JSON both containerd and CRI-O fill) and `StopContainer` with timeout 0, which the
CRI defines as "forcibly terminate the container immediately": the runtime SIGKILLs the
container's processes and records the exit itself, as a kubelet-initiated kill would be.

The messages are encoded by `criwire`; responses come back as raw bytes and are decoded here, so
a malformed reply is our clear error rather than gRPC's generic "Exception deserializing".
"""

from __future__ import annotations

import threading
from typing import Any

import grpc

from chaosbus.injector.backends import criwire
from chaosbus.injector.backends.containers import (
    DEFAULT_TIMEOUT_S,
    Observed,
    RuntimeCallError,
    pid_from_json,
    require_socket,
)

SERVICE = "runtime.v1.RuntimeService"
STATUS_METHOD = f"/{SERVICE}/ContainerStatus"
STOP_METHOD = f"/{SERVICE}/StopContainer"

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}


def _raw(data: bytes) -> bytes:
    return data


class CriClient:
    """One runtime's CRI endpoint. Thread-safe: faults call it from worker threads."""

    def __init__(self, socket_path: str, *, runtime: str = "CRI", timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.socket_path, self.runtime, self.timeout = socket_path, runtime, timeout
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._status: Any = None
        self._stop: Any = None

    def status(self, container_id: str) -> Observed | None:
        """The container's PID and running state; None if the runtime does not know it.

        Raises:
            RuntimeCallError: socket missing, call failed, or a reply without a usable pid.
        """
        call = self._calls()[0]
        raw = self._invoke(call, criwire.StatusRequest(container_id, verbose=True), "ContainerStatus", container_id)
        if raw is None:
            return None
        try:
            reply = criwire.decode_status_reply(raw)
        except criwire.WireError as e:
            raise RuntimeCallError(
                f"{self.runtime} ContainerStatus reply for {container_id} is malformed: {e}"
            ) from None
        running = reply.state == criwire.CONTAINER_RUNNING
        info = reply.info.get("info")
        if info is None:
            if running:
                raise RuntimeCallError(
                    f"{self.runtime} ContainerStatus for running container {container_id} has "
                    'no verbose info["info"] with its pid'
                )
            return Observed(pid=0, running=False, labels=reply.labels)
        return Observed(
            pid=pid_from_json(info, f'{self.runtime} info["info"] of {container_id}'),
            running=running,
            labels=reply.labels,
        )

    def stop(self, container_id: str) -> bool:
        """StopContainer with timeout 0 (kill now); False if the runtime does not know the container.

        Raises:
            RuntimeCallError: socket missing or the call failed.
        """
        call = self._calls()[1]
        return (
            self._invoke(call, criwire.StopRequest(container_id, timeout=0), "StopContainer", container_id) is not None
        )

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = self._status = self._stop = None

    def _calls(self) -> tuple[Any, Any]:
        require_socket(self.socket_path, self.runtime)
        with self._lock:
            if self._channel is None:
                self._channel = grpc.insecure_channel(f"unix://{self.socket_path}")
                self._status = self._channel.unary_unary(
                    STATUS_METHOD, request_serializer=criwire.encode_status_request, response_deserializer=_raw
                )
                self._stop = self._channel.unary_unary(
                    STOP_METHOD, request_serializer=criwire.encode_stop_request, response_deserializer=_raw
                )
            return self._status, self._stop

    def _invoke(self, call: Any, request: object, method: str, container_id: str) -> bytes | None:
        try:
            raw = call(request, timeout=self.timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            if code == grpc.StatusCode.NOT_FOUND:
                return None
            details = e.details() if hasattr(e, "details") else str(e)
            name = code.name if code is not None else "unknown"
            raise RuntimeCallError(
                f"{self.runtime} {method} {container_id} via {self.socket_path} failed: {name}: {details}",
                retryable=code in _RETRYABLE,
            ) from None
        if not isinstance(raw, bytes):
            raise RuntimeCallError(f"{self.runtime} {method} reply is not bytes")
        return raw
