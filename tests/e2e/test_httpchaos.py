"""HTTPChaos end to end through the CLI: an echo server in peer-3's netns on two ports, peers
sending requests to it; experiments applied, described, paused, expired and deleted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from helpers.httpprobe import Reply, echo_server, listening_ports, median_seconds, request
from helpers.live import System, eventually

from chaosbus.injector.backends import nft

pytestmark = pytest.mark.privileged
SERVER = 3
PORT, OTHER_PORT = 9080, 9081


def httpchaos(name: str, pod: str, target: str, port: int = PORT, **extra: Any) -> str:
    spec: dict[str, Any] = {
        "target": target,
        "port": port,
        "mode": "all",
        "selector": {"fieldSelectors": {"metadata.name": pod}},
        **extra,
    }
    return yaml.safe_dump(
        {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "HTTPChaos", "metadata": {"name": name}, "spec": spec}
    )


@pytest.fixture(scope="module")
def server(system: System) -> Iterator[str]:
    with echo_server(system.pods[SERVER].netns_path, (PORT, OTHER_PORT)):
        yield system.pods[SERVER].ip


def send(system: System, pod: int, server: str, target: str = "/", port: int = PORT, **kw: Any) -> Reply:
    return request(system.pods[pod].netns_path, server, port, target, timeout=3.0, **kw)


def records(system: System, name: str) -> list[dict[str, Any]]:
    obj = system.get("httpchaos", name) or {}
    return ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []


def assert_untouched(system: System, server: str) -> None:
    for pod in (0, 1, 2):
        reply = send(system, pod, server, "/api/x?a=1", headers={"X-Chaos": "1"})
        assert reply.status == 200 and reply.json()["path"] == "/api/x", (pod, reply)
        assert not [t for t in nft.list_tables(system.pods[pod].netns_path) if t.startswith(nft.TABLE_PREFIX)]
    assert not [t for t in nft.list_tables(system.pods[SERVER].netns_path) if t.startswith(nft.TABLE_PREFIX)]
    # no proxy left listening: only the echo server's ports and the peer's own 8080
    eventually(lambda: listening_ports(system.pods[SERVER].netns_path) == {PORT, OTHER_PORT, 8080}, timeout=5)
    for pod in (0, 1, 2):
        eventually(lambda pod=pod: listening_ports(system.pods[pod].netns_path) == {8080}, timeout=5)


def test_abort_recorded_and_deleted(system: System, server: str) -> None:
    system.cli("apply", "-f", "-", stdin=httpchaos("http-abort", "peer-3", "Request", path="/api/*", abort=True))
    eventually(lambda: send(system, 0, server, "/api/x").status == "reset", timeout=15)
    assert send(system, 1, server, "/api/y").status == "reset"
    assert send(system, 0, server, "/other").status == 200
    assert send(system, 0, server, "/api/x", port=OTHER_PORT).status == 200
    [rec] = eventually(lambda: [r for r in records(system, "http-abort") if r["phase"] == "Injected"], timeout=10)
    assert rec["id"] == "default/peer-3" and rec["injectedCount"] == 1
    described = system.cli("describe", "httpchaos", "http-abort").stdout
    assert "Applied" in described.split("Events:", 1)[1]
    system.cli("delete", "httpchaos", "http-abort")
    assert_untouched(system, server)


def test_only_the_selected_server_is_touched(system: System, server: str) -> None:
    # Every peer serves on 8080 (demoapp); the experiment is on peer-3's 8080 only.
    system.cli("apply", "-f", "-", stdin=httpchaos("http-8080", "peer-3", "Request", port=8080, abort=True))
    eventually(lambda: send(system, 0, server, port=8080).status == "reset", timeout=15)
    for other in (1, 2):
        reply = send(system, 0, system.pods[other].ip, port=8080)
        assert (reply.status, reply.body) == (200, f"hello from peer-{other}\n".encode()), reply
    assert send(system, 0, server, port=PORT).status == 200
    system.cli("delete", "httpchaos", "http-8080")
    eventually(lambda: send(system, 0, server, port=8080).status == 200, timeout=15)
    assert_untouched(system, server)


def test_replace_and_patch_on_one_client_only(system: System, server: str) -> None:
    # Selected: peer-0, as a client. Its responses are rewritten; peer-1's are not.
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=httpchaos(
            "http-rewrite",
            "peer-0",
            "Response",
            path="/json",
            code=200,
            replace={"code": 503, "headers": {"X-Echo": "replaced"}},
            patch={"body": {"type": "JSON", "value": '{"nested": {"drop": null}, "added": true}'}},
        ),
    )

    def rewritten() -> bool:
        reply = send(system, 0, server, "/json")
        return reply.status == 503 and reply.json() == {"name": "echo", "nested": {"keep": 1}, "added": True}

    eventually(rewritten, timeout=15)
    assert send(system, 0, server, "/json").headers["x-echo"] == "replaced"
    assert send(system, 1, server, "/json").status == 200
    assert send(system, 0, server, "/json", port=OTHER_PORT).status == 200
    system.cli("delete", "httpchaos", "http-rewrite")
    assert_untouched(system, server)


def test_delay_and_pause(system: System, server: str) -> None:
    path = system.pods[2].netns_path
    system.cli("apply", "-f", "-", stdin=httpchaos("http-delay", "peer-3", "Request", path="/slow", delay="500ms"))

    def delayed() -> bool:
        return send(system, 2, server, "/slow").seconds >= 0.45

    eventually(delayed, timeout=15)
    slow, fast = median_seconds(path, server, PORT, "/slow"), median_seconds(path, server, PORT, "/fast")
    assert 0.45 <= slow - fast <= 0.55, (slow, fast)
    system.cli("annotate", "httpchaos", "http-delay", "experiment.chaos-mesh.org/pause=true")
    eventually(lambda: send(system, 2, server, "/slow").seconds < 0.3, timeout=15)
    system.cli("annotate", "httpchaos", "http-delay", "experiment.chaos-mesh.org/pause-")
    eventually(delayed, timeout=15)
    system.cli("delete", "httpchaos", "http-delay")
    eventually(lambda: send(system, 2, server, "/slow").seconds < 0.3, timeout=15)
    assert_untouched(system, server)


def test_duration(system: System, server: str) -> None:
    # Seen while its 10 s last (from the object's creation, the injection's path included), then
    # gone without a delete.
    system.cli("apply", "-f", "-", stdin=httpchaos("http-short", "peer-3", "Request", abort=True, duration="10s"))
    eventually(lambda: send(system, 2, server, "/").status == "reset", timeout=10)
    eventually(lambda: send(system, 2, server, "/").status == 200, timeout=20)
    system.cli("delete", "httpchaos", "http-short")
    assert_untouched(system, server)


def test_tls_fails_per_target_with_a_clear_message(system: System, server: str) -> None:
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=httpchaos(
            "http-tls",
            "peer-3",
            "Request",
            abort=True,
            tls={"secretName": "tls", "secretNamespace": "default", "certName": "tls.crt", "keyName": "tls.key"},
        ),
    )
    [rec] = eventually(
        lambda: [r for r in records(system, "http-tls") if (r.get("events") or [{}])[-1].get("type") == "Failed"],
        timeout=15,
    )
    assert rec["phase"] == "Not Injected" and rec["injectedCount"] == 0
    assert "tls is not supported by chaosbus" in rec["events"][-1]["message"]
    assert "tls is not supported" in system.cli("describe", "httpchaos", "http-tls").stdout
    system.cli("delete", "httpchaos", "http-tls")
    assert_untouched(system, server)
