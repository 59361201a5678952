"""StatusCheck's HTTP probe against a real local HTTP server (stdlib http.server on 127.0.0.1,
port 0) whose answer the test flips: status-code criteria (single and range), method, headers
and body, the timeout, and a refused connection.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chaosbus.common.crd.orchestration import StatusCheckHTTP
from chaosbus.scheduler import probe, statuscheck


class Flippable(http.server.ThreadingHTTPServer):
    code = 200
    delay = 0.0
    seen: list[tuple[str, str, bytes]]


class Handler(http.server.BaseHTTPRequestHandler):
    server: Flippable

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.seen.append((self.command, self.headers.get("X-Probe", ""), self.rfile.read(length)))
        time.sleep(self.server.delay)
        self.send_response(self.server.code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Flippable]:
    srv = Flippable(("127.0.0.1", 0), Handler)
    srv.seen = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def http_spec(srv: Flippable, **kw: Any) -> StatusCheckHTTP:
    raw: dict[str, Any] = {"url": f"http://127.0.0.1:{srv.server_address[1]}/health", "criteria": {"statusCode": "200"}}
    raw.update(kw)
    return statuscheck.decode_spec({"http": raw}).http  # type: ignore[return-value]


def test_code_criteria_follow_the_server_as_it_flips(server: Flippable) -> None:
    assert probe.probe_sync(http_spec(server), 1.0) == probe.ProbeResult(ok=True, detail="200")
    server.code = 500
    assert probe.probe_sync(http_spec(server), 1.0) == probe.ProbeResult(ok=False, detail="500")
    server.code = 204
    assert not probe.probe_sync(http_spec(server), 1.0).ok
    assert probe.probe_sync(http_spec(server, criteria={"statusCode": "200-299"}), 1.0).ok


def test_post_sends_headers_and_body(server: Flippable) -> None:
    result = probe.probe_sync(http_spec(server, method="POST", body='{"a": 1}', headers={"X-Probe": ["yes"]}), 1.0)
    assert result.ok and server.seen == [("POST", "yes", b'{"a": 1}')]


def test_a_slow_answer_is_a_failure_after_the_timeout(server: Flippable) -> None:
    server.delay = 2.0
    started = time.monotonic()
    result = probe.probe_sync(http_spec(server), 0.5)
    assert not result.ok and "no response" in result.detail
    assert time.monotonic() - started < 1.9


def test_refused_connection_is_a_failure() -> None:
    spec = statuscheck.decode_spec({"http": {"url": "http://127.0.0.1:1/", "criteria": {"statusCode": "200"}}})
    assert spec.http is not None
    result = probe.probe_sync(spec.http, 1.0)
    assert not result.ok and "no response" in result.detail
