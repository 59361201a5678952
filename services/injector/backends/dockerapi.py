"""Docker Engine adapter: the Engine's HTTP/1.1 API on its unix socket, stdlib http.client only.

`GET /containers/{id}/json` gives `State.Pid` and `State.Running`; container-kill is
`POST /containers/{id}/kill?signal=KILL`. Unversioned paths: the Engine serves them at its own
API version, and these two calls have kept their shape since the oldest supported one.
One connection per call, each with `timeout` seconds for connect and reply.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from chaosbus.injector.backends.containers import (
    DEFAULT_TIMEOUT_S,
    Observed,
    RuntimeCallError,
    checked_pid,
    require_socket,
)

RUNTIME = "docker"


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix stream socket (the Host header stays `localhost`)."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DockerClient:
    def __init__(self, socket_path: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.socket_path, self.timeout = socket_path, timeout

    def status(self, container_id: str) -> Observed | None:
        """The container's PID and running state; None if the Engine does not know it.

        Raises:
            RuntimeCallError: socket missing, call failed, or a reply without State.Pid/Running.
        """
        code, body = self._request("GET", f"/containers/{container_id}/json")
        if code == 404:
            return None
        if code != 200:
            raise self._refused("inspect", container_id, code, body)
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise RuntimeCallError(f"docker inspect {container_id}: reply is not JSON: {e}") from None
        state = doc.get("State") if isinstance(doc, dict) else None
        if not isinstance(state, dict) or not isinstance(state.get("Running"), bool):
            raise RuntimeCallError(f"docker inspect {container_id}: reply has no State.Running boolean")
        conf = doc.get("Config")
        raw = conf.get("Labels") if isinstance(conf, dict) else None
        labels = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        return Observed(
            pid=checked_pid(state.get("Pid"), f"docker inspect {container_id} State.Pid"),
            running=state["Running"],
            labels=labels,
        )

    def kill(self, container_id: str) -> bool:
        """SIGKILL the container through the Engine; False if the Engine does not know it.

        A container that is not running (409) counts as done: the kill has nothing left to do.

        Raises:
            RuntimeCallError: socket missing or the Engine refused.
        """
        code, body = self._request("POST", f"/containers/{container_id}/kill?signal=KILL")
        if code == 404:
            return False
        if code not in (204, 200, 409):
            raise self._refused("kill", container_id, code, body)
        return True

    def _request(self, method: str, path: str) -> tuple[int, bytes]:
        require_socket(self.socket_path, RUNTIME)
        conn = UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            conn.request(method, path, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise RuntimeCallError(
                f"docker {method} {path} via {self.socket_path} failed: {type(e).__name__}: {e}", retryable=True
            ) from None
        finally:
            conn.close()

    def _refused(self, what: str, container_id: str, code: int, body: bytes) -> RuntimeCallError:
        return RuntimeCallError(
            f"docker {what} {container_id} via {self.socket_path}: HTTP {code}: {_engine_message(body)}",
            retryable=code >= 500,
        )


def _engine_message(body: bytes) -> str:
    """The Engine's `{"message": ...}` error text, else the start of the body."""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace")
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return str(doc["message"])
    return body[:200].decode(errors="replace")
