"""In-repo fake container runtimes for tests: real servers on real unix sockets, real processes.

`FakeCri` is a grpcio server speaking `runtime.v1.RuntimeService` (ContainerStatus, StopContainer)
with the injector's own wire codec; `FakeDocker` is a stdlib HTTP/1.1 server with the Docker
Engine's `GET /containers/{id}/json` and `POST /containers/{id}/kill`. Both map container IDs to
child processes they started, and record every call so a test can tell a kill that went through
the runtime from one that did not. `Containers.reply_override` makes a runtime answer garbage.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socketserver
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc

from chaosbus.injector.backends import criwire

Spawn = Callable[[list[str]], "subprocess.Popen[Any]"]


@dataclass
class Containers:
    """Container id -> the real process standing in for it; the runtime calls seen, in order."""

    procs: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    reply_override: dict[str, bytes] = field(default_factory=dict)  # container id -> raw reply body
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # container id -> its labels
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(
        self,
        container_id: str,
        argv: list[str] | None = None,
        spawn: Spawn | None = None,
        *,
        pod_uid: str | None = None,
        pod_namespace: str | None = None,
    ) -> int:
        """Start the container's process; with `pod_uid` (and `pod_namespace`), labelled as a kubelet
        labels its containers."""
        proc = (spawn or _popen)(argv or ["sleep", "300"])
        with self.lock:
            self.procs[container_id] = proc
            if pod_uid is not None:
                labels = {"io.kubernetes.pod.uid": pod_uid, "io.kubernetes.pod.name": "web-0"}
                if pod_namespace is not None:
                    labels["io.kubernetes.pod.namespace"] = pod_namespace
                self.labels[container_id] = labels
        return proc.pid

    def observe(self, method: str, container_id: str) -> subprocess.Popen[Any] | None:
        with self.lock:
            self.calls.append((method, container_id))
            return self.procs.get(container_id)

    def kill(self, proc: subprocess.Popen[Any]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)  # reaped: the pid is gone, as after a runtime's own kill

    def kills(self) -> list[str]:
        with self.lock:
            return [cid for method, cid in self.calls if method in ("StopContainer", "kill")]

    def close(self) -> None:
        with self.lock:
            procs = list(self.procs.values())
        for proc in procs:
            self.kill(proc)
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    stream.close()


def _popen(argv: list[str]) -> subprocess.Popen[Any]:
    return subprocess.Popen(argv)


def _running(proc: subprocess.Popen[Any] | None) -> bool:
    return proc is not None and proc.poll() is None


# --- CRI ------------------------------------------------------------------------------------------


class FakeCri:
    """A CRI runtime (containerd's verbose info shape) on `socket_path`."""

    def __init__(self, socket_path: Path, containers: Containers | None = None) -> None:
        self.socket_path = socket_path
        self.containers = containers or Containers()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            "ContainerStatus": grpc.unary_unary_rpc_method_handler(
                self._status, request_deserializer=criwire.decode_status_request, response_serializer=_same
            ),
            "StopContainer": grpc.unary_unary_rpc_method_handler(
                self._stop, request_deserializer=criwire.decode_stop_request, response_serializer=_same
            ),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("runtime.v1.RuntimeService", handlers),)
        )
        self.server.add_insecure_port(f"unix://{socket_path}")
        self.stop_timeouts: list[int] = []

    def _status(self, req: criwire.StatusRequest, context: grpc.ServicerContext) -> bytes:
        proc = self.containers.observe("ContainerStatus", req.container_id)
        if req.container_id in self.containers.reply_override:
            return self.containers.reply_override[req.container_id]
        if proc is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"container {req.container_id!r} not found")
        assert proc is not None
        running = _running(proc)
        info = (
            {
                "info": json.dumps(
                    {"sandboxID": "sb", "pid": proc.pid if running else 0, "runtimeSpec": {"ociVersion": "1.0.2"}}
                )
            }
            if req.verbose
            else {}
        )
        state = criwire.CONTAINER_RUNNING if running else criwire.CONTAINER_EXITED
        return criwire.encode_status_reply(
            criwire.StatusReply(
                req.container_id, state, 0 if running else 137, info, self.containers.labels.get(req.container_id, {})
            )
        )

    def _stop(self, req: criwire.StopRequest, context: grpc.ServicerContext) -> bytes:
        proc = self.containers.observe("StopContainer", req.container_id)
        self.stop_timeouts.append(req.timeout)
        if proc is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"container {req.container_id!r} not found")
        assert proc is not None
        self.containers.kill(proc)
        return b""  # StopContainerResponse has no fields

    def __enter__(self) -> FakeCri:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=None).wait(5)
        self.containers.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)


def _same(data: bytes) -> bytes:
    return data


# --- Docker Engine ----------------------------------------------------------------------------------


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class FakeDocker:
    """The Docker Engine's inspect and kill endpoints on `socket_path`."""

    def __init__(self, socket_path: Path, containers: Containers | None = None) -> None:
        self.socket_path = socket_path
        self.containers = containers or Containers()
        self.signals: list[str] = []
        self.server = _UnixHTTPServer(str(socket_path), self._handler_class())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (the stdlib's naming)
                parts = urlsplit(self.path).path.strip("/").split("/")
                if len(parts) != 3 or parts[0] != "containers" or parts[2] != "json":
                    return self._reply(404, {"message": "page not found"})
                cid = parts[1]
                proc = fake.containers.observe("inspect", cid)
                if cid in fake.containers.reply_override:
                    return self._reply(200, raw=fake.containers.reply_override[cid])
                if proc is None:
                    return self._reply(404, {"message": f"No such container: {cid}"})
                running = _running(proc)
                self._reply(
                    200,
                    {
                        "Id": cid,
                        "State": {
                            "Status": "running" if running else "exited",
                            "Running": running,
                            "Pid": proc.pid if running else 0,
                        },
                        "Config": {"Labels": fake.containers.labels.get(cid)},
                    },
                )

            def do_POST(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                if len(parts) != 3 or parts[0] != "containers" or parts[2] != "kill":
                    return self._reply(404, {"message": "page not found"})
                proc = fake.containers.observe("kill", parts[1])
                fake.signals.append(parse_qs(url.query).get("signal", ["KILL"])[0])
                if proc is None:
                    return self._reply(404, {"message": f"No such container: {parts[1]}"})
                if not _running(proc):
                    return self._reply(409, {"message": f"Container {parts[1]} is not running"})
                fake.containers.kill(proc)
                self._reply(204)

            def _reply(self, code: int, doc: object = None, raw: bytes | None = None) -> None:
                body = raw if raw is not None else (b"" if doc is None else json.dumps(doc).encode())
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        return Handler

    def __enter__(self) -> FakeDocker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        self.containers.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)


@contextlib.contextmanager
def runtimes(tmp: Path) -> Iterator[tuple[FakeCri, FakeDocker]]:
    """Both fakes on sockets in `tmp` (a short path: unix socket paths are limited to 107 bytes)."""
    with FakeCri(tmp / "containerd.sock") as cri, FakeDocker(tmp / "docker.sock") as docker:
        yield cri, docker


@contextlib.contextmanager
def runtime_sockets(
    containerd: Path | str, crio: Path | str, docker: Path | str, *, timeout: float | None = None
) -> Iterator[None]:
    """The default backends' runtime adapters (what `runtime.resolve` and an executor handed no
    backends use) pointed at these sockets for the block, then back to the environment's.
    """
    from chaosbus.injector import runtime
    from chaosbus.injector.backends.kit import process_backends

    paths = {"containerd": str(containerd), "cri-o": str(crio), "docker": str(docker)}
    config = (
        runtime.RuntimeConfig(sockets=paths)
        if timeout is None
        else runtime.RuntimeConfig(sockets=paths, timeout=timeout)
    )
    runtimes = process_backends().runtimes
    runtimes.configure(config)
    try:
        yield
    finally:
        runtimes.configure(runtime.config_from_env())
