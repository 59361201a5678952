"""HTTP on real traffic for HTTPChaos tests: an echo server run as a process inside a pod's network
namespace (argv only), and a client that sends requests from inside another one.

The server answers every request on every port it is given with JSON describing what it got
(method, path, query, headers, body, its port); `/status/<code>` answers with that code, and
`/json` with a JSON document the tests patch.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from chaosbus.common import netns

ECHO_SERVER = """
import http.server, json, sys, threading, urllib.parse
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True
    def handle_any(self):
        if self.path == '/upgrade':  # switches to a line protocol: each line comes back upper-cased
            self.send_response(101)
            self.send_header('Connection', 'Upgrade')
            self.send_header('Upgrade', 'shout')
            self.end_headers()
            self.wfile.flush()
            while line := self.rfile.readline():
                self.wfile.write(line.upper())
                self.wfile.flush()
            self.close_connection = True
            return
        n = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(n).decode('latin-1') if n else ''
        url = urllib.parse.urlsplit(self.path)
        code = 200
        if url.path.startswith('/status/'):
            code = int(url.path.rsplit('/', 1)[1])
        if url.path == '/json':
            doc = {'name': 'echo', 'nested': {'keep': 1, 'drop': 2}}
        else:
            doc = {'port': self.server.server_address[1], 'method': self.command, 'path': url.path,
                   'query': url.query, 'headers': {k.lower(): v for k, v in self.headers.items()}, 'body': body}
        out = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('X-Echo', 'yes')
        self.send_header('Content-Length', str(len(out)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any
    def log_message(self, *args):
        pass
servers = [http.server.ThreadingHTTPServer(('0.0.0.0', int(p)), Handler) for p in sys.argv[1:]]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print('ready', flush=True)
servers[0].serve_forever()
"""


@dataclass(frozen=True)
class Reply:
    """What a client saw: a status (or `reset` / `error: ...`), headers, body and how long it took."""

    status: int | str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)


@contextmanager
def echo_server(netns_path: str, ports: tuple[int, ...]) -> Iterator[None]:
    """The echo server on `ports` inside the namespace."""
    proc = subprocess.Popen(
        ["nsenter", f"--net={netns_path}", sys.executable, "-c", ECHO_SERVER, *map(str, ports)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait(5)
        if proc.stdout:
            proc.stdout.close()


def _request(
    ip: str, port: int, method: str, target: str, headers: dict[str, str], body: bytes | None, timeout: float
) -> Reply:
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    start = time.monotonic()
    try:
        conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, time.monotonic() - start)
    except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError):
        return Reply("reset", seconds=time.monotonic() - start)
    except OSError as e:
        return Reply(f"error: {e}", seconds=time.monotonic() - start)
    finally:
        conn.close()


def request(
    netns_path: str,
    ip: str,
    port: int,
    target: str = "/",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 5.0,
) -> Reply:
    """One request on a new connection, sent from inside the namespace."""
    return netns.run_in_netns(netns_path, _request, ip, port, method, target, headers or {}, body, timeout)


def median_seconds(netns_path: str, ip: str, port: int, target: str, n: int = 7) -> float:
    """The median time of `n` successful GETs of `target` (fails on any other answer)."""
    times = []
    for _ in range(n):
        reply = request(netns_path, ip, port, target)
        assert reply.status == 200, reply
        times.append(reply.seconds)
    return sorted(times)[len(times) // 2]


def listening_ports(netns_path: str) -> set[int]:
    """The TCP ports something listens on in the namespace (a running chaos proxy has one)."""

    def ports() -> set[int]:
        with open("/proc/thread-self/net/tcp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
        return {int(r[1].rsplit(":", 1)[1], 16) for r in rows if r[3] == "0A"}

    return netns.run_in_netns(netns_path, ports)
