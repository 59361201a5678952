"""HTTPChaos against real HTTP traffic: an echo server in pod 3 on two ports, pods 0 and 1 sending
requests to it; the fault redirects the selected pod's connections on the experiment's port to
the injector's proxy, which acts on the messages the rule selects and relays the rest.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import pytest
from helpers.httpprobe import echo_server, median_seconds, request

from chaosbus.common import netns
from chaosbus.common.messages import Http, HttpPatch, HttpReplace
from chaosbus.injector import faults
from chaosbus.injector.backends import nft
from chaosbus.injector.backends.kit import process_backends
from chaosbus.injector.faults.http import table_name

from .conftest import Lab
from .test_kernel_faults import ctx_for

pytestmark = pytest.mark.privileged

SERVER, CLIENT, BYSTANDER = 3, 0, 1
PORT, OTHER_PORT = 9080, 9081


@pytest.fixture(scope="module")
def server(lab: Lab) -> Iterator[str]:
    with echo_server(lab.pods[SERVER].net.netns_path, (PORT, OTHER_PORT)):
        yield lab.pods[SERVER].ip


class Applied:
    """HTTPChaos applied to one pod as the injector would, recovered on exit."""

    def __init__(self, lab: Lab, uid: str, pod: int, spec: Http, deadline: float | None = None) -> None:
        self.ctx = ctx_for(uid, [lab.pods[pod].server.pid], spec, deadline=deadline)
        self.spec = spec
        self.fault = faults.get("http")

    def __enter__(self) -> Applied:
        self.fault.apply(self.ctx, self.spec)
        return self

    def __exit__(self, *exc: object) -> None:
        self.fault.recover(self.ctx, self.spec)


def get(lab: Lab, pod: int, server: str, target: str = "/", port: int = PORT, **kw: object) -> object:
    return request(lab.pods[pod].net.netns_path, server, port, target, **kw)  # type: ignore[arg-type]


def http_tables(lab: Lab) -> list[str]:
    return [t for p in lab.pods for t in nft.list_tables(p.net.netns_path) if t.startswith(nft.TABLE_PREFIX)]


def assert_clean(lab: Lab, server: str) -> None:
    assert not http_tables(lab)
    assert not process_backends().http.running()
    for pod in (CLIENT, BYSTANDER):
        reply = request(lab.pods[pod].net.netns_path, server, PORT, "/api/x?a=1", headers={"X-Chaos": "1"})
        assert reply.status == 200 and reply.json()["path"] == "/api/x" and reply.json()["query"] == "a=1", reply


def test_abort_resets_matched_requests_only(lab: Lab, server: str) -> None:
    spec = Http(target="Request", port=PORT, path="/api/*", abort=True)
    with Applied(lab, "http-abort", SERVER, spec):
        assert get(lab, CLIENT, server, "/api/x").status == "reset"  # type: ignore[attr-defined]
        assert get(lab, BYSTANDER, server, "/api/deep/er?q=1").status == "reset"  # type: ignore[attr-defined]
        assert get(lab, CLIENT, server, "/other").status == 200  # type: ignore[attr-defined]
        assert get(lab, CLIENT, server, "/api").status == 200  # type: ignore[attr-defined]  # the glob needs "/api/"
        assert get(lab, CLIENT, server, "/api/x", port=OTHER_PORT).status == 200  # type: ignore[attr-defined]
    assert_clean(lab, server)


def test_delay_adds_its_time_to_matched_requests_only(lab: Lab, server: str) -> None:
    path = lab.pods[CLIENT].net.netns_path
    spec = Http(target="Request", port=PORT, path="/slow", method="GET", delay_ns=500_000_000)
    with Applied(lab, "http-delay", SERVER, spec):
        slow = median_seconds(path, server, PORT, "/slow")
        fast = median_seconds(path, server, PORT, "/fast")
        assert 0.45 <= slow - fast <= 0.55, (slow, fast)
        assert fast < 0.2, fast
        # another method is not selected
        assert get(lab, CLIENT, server, "/slow", method="POST", body=b"x").seconds < 0.4  # type: ignore[attr-defined]
    assert_clean(lab, server)


def test_replace_and_patch_rewrite_selected_messages_and_experiments_compose(lab: Lab, server: str) -> None:
    request_rule = Http(
        target="Request",
        port=PORT,
        request_headers={"X-Chaos": "1"},
        replace=HttpReplace(
            path="/rewritten", method="PUT", body=b'{"a": 1}', queries={"a": "9"}, headers={"X-Replaced": "yes"}
        ),
        patch=HttpPatch(body_json='{"b": 2}', queries=[["p", "1"]], headers=[["X-Patched", "1"]]),
    )
    response_rule = Http(
        target="Response",
        port=PORT,
        path="/json",
        code=200,
        replace=HttpReplace(code=418, headers={"X-Echo": "replaced"}),
        patch=HttpPatch(body_json='{"nested": {"drop": null}, "added": true}'),
    )
    with Applied(lab, "http-req", SERVER, request_rule), Applied(lab, "http-resp", SERVER, response_rule):
        seen = get(lab, CLIENT, server, "/api/x?a=1&z=3", headers={"X-Chaos": "1"}).json()  # type: ignore[attr-defined]
        assert (seen["method"], seen["path"], seen["query"]) == ("PUT", "/rewritten", "a=9&z=3&p=1")
        assert seen["body"] == '{"a":1,"b":2}'
        assert seen["headers"]["x-replaced"] == "yes" and seen["headers"]["x-patched"] == "1"
        plain = get(lab, CLIENT, server, "/api/x?a=1", headers={"X-Chaos": "2"}).json()  # type: ignore[attr-defined]
        assert (plain["method"], plain["path"], plain["query"], plain["body"]) == ("GET", "/api/x", "a=1", "")
        assert "x-patched" not in plain["headers"]

        reply = get(lab, CLIENT, server, "/json")
        assert reply.status == 418 and reply.headers["x-echo"] == "replaced"  # type: ignore[attr-defined]
        assert reply.json() == {"name": "echo", "nested": {"keep": 1}, "added": True}  # type: ignore[attr-defined]
        assert int(reply.headers["content-length"]) == len(reply.body)  # type: ignore[attr-defined]
        # the response rule's code selector: a 404 is not selected
        assert get(lab, CLIENT, server, "/status/404").status == 404  # type: ignore[attr-defined]
    assert_clean(lab, server)


def test_the_selected_client_side_and_bystanders(lab: Lab, server: str) -> None:
    # The rule is on the client pod: its requests to any server's port go through its proxy.
    spec = Http(target="Response", port=PORT, code=500, replace=HttpReplace(code=200, body=b"fine"))
    abort = Http(target="Request", port=PORT, method="DELETE", abort=True)
    with Applied(lab, "http-client", CLIENT, spec), Applied(lab, "http-client-abort", CLIENT, abort):
        reply = get(lab, CLIENT, server, "/status/500")
        assert (reply.status, reply.body) == (200, b"fine")  # type: ignore[attr-defined]
        assert get(lab, CLIENT, server, "/x", method="DELETE").status == "reset"  # type: ignore[attr-defined]
        assert get(lab, BYSTANDER, server, "/status/500").status == 500  # type: ignore[attr-defined]
        assert get(lab, BYSTANDER, server, "/x", method="DELETE").status == 200  # type: ignore[attr-defined]
        assert get(lab, CLIENT, server, "/status/500", port=OTHER_PORT).status == 500  # type: ignore[attr-defined]
        # several requests on one kept-alive connection, each judged on its own
        replies = netns.run_in_netns(lab.pods[CLIENT].net.netns_path, _keep_alive, server)
        assert replies == [(200, b"fine"), (404, None), (200, b"fine")], replies
    assert_clean(lab, server)


def _keep_alive(server: str) -> list[tuple[int, bytes | None]]:
    import http.client

    conn = http.client.HTTPConnection(server, PORT, timeout=5)
    out: list[tuple[int, bytes | None]] = []
    try:
        for path in ("/status/500", "/status/404", "/status/500"):
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            out.append((resp.status, body if resp.status != 404 else None))
    finally:
        conn.close()
    return out


def test_traffic_that_is_not_http_passes_as_it_is(lab: Lab, server: str) -> None:
    def raw() -> bytes:
        with socket.create_connection((server, PORT), timeout=5) as s:
            s.sendall(b"NOT-HTTP\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            return data

    with Applied(lab, "http-raw", SERVER, Http(target="Request", port=PORT, abort=True)):
        answer = netns.run_in_netns(lab.pods[CLIENT].net.netns_path, raw)
        # the server's own answer to a line it cannot parse (an HTTP/0.9-style error page)
        assert b"Error code: 400" in answer, answer[:200]
    assert_clean(lab, server)


def test_an_upgraded_connection_is_relayed_as_it_is(lab: Lab, server: str) -> None:
    def upgrade() -> bytes:
        with socket.create_connection((server, PORT), timeout=5) as s:
            s.sendall(b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: shout\r\n\r\nhello\n")
            data = b""
            while b"HELLO\n" not in data and (chunk := s.recv(4096)):
                data += chunk
            s.sendall(b"again\n")
            while b"AGAIN\n" not in data and (chunk := s.recv(4096)):
                data += chunk
            return data

    with Applied(lab, "http-upgrade", SERVER, Http(target="Response", port=PORT, path="/api/*", abort=True)):
        answer = netns.run_in_netns(lab.pods[CLIENT].net.netns_path, upgrade)
        assert answer.startswith(b"HTTP/1.1 101 ") and answer.endswith(b"\r\n\r\nHELLO\nAGAIN\n"), answer
    assert_clean(lab, server)


def test_the_kernel_ends_the_redirect_at_its_deadline_even_without_a_proxy(lab: Lab, server: str) -> None:
    deadline = float(int(time.time()) + 3)
    spec = Http(target="Request", port=PORT, abort=True)
    with Applied(lab, "http-deadline", SERVER, spec, deadline=deadline):
        assert get(lab, CLIENT, server, "/").status == "reset"  # type: ignore[attr-defined]
        for p in process_backends().http.running().values():  # the injector dies: its proxy with it; the table stays
            p.stop()
        time.sleep(max(0.0, deadline - time.time()) + 0.2)
        assert http_tables(lab) == [table_name("http-deadline", ".")]
        assert get(lab, CLIENT, server, "/").status == 200  # type: ignore[attr-defined]
    assert_clean(lab, server)


def test_tls_is_refused_per_target(lab: Lab, server: str) -> None:
    spec = Http(target="Request", port=PORT, abort=True, tls=True)
    ctx = ctx_for("http-tls", [lab.pods[SERVER].server.pid], spec)
    with pytest.raises(faults.FaultError, match="tls is not supported") as err:
        faults.get("http").apply(ctx, spec)
    assert not err.value.retryable
    assert_clean(lab, server)


def test_a_gone_target_counts_as_recovered_and_its_proxy_stops(lab: Lab, server: str) -> None:
    victim = lab.spawn(2, [sys.executable, "-c", "import time; time.sleep(60)"])
    spec = Http(target="Request", port=PORT, abort=True)
    fault = faults.get("http")
    fault.apply(ctx_for("http-gone", [victim.pid], spec), spec)
    assert len(process_backends().http.running()) == 1
    victim.kill()
    victim.wait(5)
    if victim.stdout:
        victim.stdout.close()
    assert "gone" in fault.recover(ctx_for("http-gone", [victim.pid], spec), spec)
    deadline = time.monotonic() + 5
    while process_backends().http.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_backends().http.running()
    path = lab.pods[2].net.netns_path
    assert fault.orphans.find(path, process_backends()) == [table_name("http-gone", ".")]
    fault.orphans.remove(path, table_name("http-gone", "."), process_backends())
    assert_clean(lab, server)
