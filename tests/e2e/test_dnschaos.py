"""DNSChaos end to end through the CLI: a zone server in peer-3's netns, peers resolving through it
(UDP and TCP, straight to its address); experiments applied, paused, expired and deleted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from helpers.dnsprobe import ZONE, Answer, every_name, loopback_udp_sockets, real, resolve, zone_server
from helpers.live import System, eventually

from chaosbus.injector.backends import nft

pytestmark = pytest.mark.privileged
SERVER = 3


def dnschaos(name: str, pod: str, action: str, **extra: Any) -> str:
    spec: dict[str, Any] = {
        "action": action,
        "mode": "all",
        "selector": {"fieldSelectors": {"metadata.name": pod}},
        **extra,
    }
    return yaml.safe_dump(
        {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "DNSChaos", "metadata": {"name": name}, "spec": spec}
    )


@pytest.fixture(scope="module")
def server(system: System) -> Iterator[str]:
    with zone_server(system.pods[SERVER].netns_path):
        yield system.pods[SERVER].ip


def answers(system: System, pod: int, server: str, tcp: bool = False) -> list[Answer]:
    return resolve(system.pods[pod].netns_path, server, every_name(tcp))


def assert_untouched(system: System, server: str, pods: tuple[int, ...] = (0, 1, 2)) -> None:
    for pod in pods:
        for tcp in (False, True):
            assert answers(system, pod, server, tcp) == [real(n) for n in ZONE], (pod, tcp)
        netns = system.pods[pod].netns_path
        assert not [t for t in nft.list_tables(netns) if t.startswith(nft.TABLE_PREFIX)], pod
        assert loopback_udp_sockets(netns) == 0, f"pod {pod} still has a responder"


def test_error_then_delete(system: System, server: str) -> None:
    system.cli("apply", "-f", "-", stdin=dnschaos("dns-error", "peer-0", "error", patterns=["a.chaos.test"]))
    want = [("SERVFAIL", []), ("SERVFAIL", []), real("b.other.test")]
    eventually(lambda: answers(system, 0, server) == want, timeout=10)
    assert answers(system, 0, server, tcp=True) == want
    assert_untouched(system, server, pods=(1,))  # not selected
    system.cli("delete", "dnschaos", "dns-error")
    eventually(lambda: answers(system, 0, server) == [real(n) for n in ZONE], timeout=10)
    assert_untouched(system, server)


def test_random_and_static_compose_on_one_pod(system: System, server: str) -> None:
    system.cli("apply", "-f", "-", stdin=dnschaos("dns-random", "peer-1", "random", patterns=["a.chaos.*"]))
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=dnschaos("dns-static", "peer-1", "static", patterns=["b.other.test"], addresses=["192.0.2.9"]),
    )

    def chaotic() -> bool:
        got = answers(system, 1, server)
        return got[2] == ("NOERROR", ["192.0.2.9"]) and all(
            r == "NOERROR" and len(a) == 1 and a[0] != ZONE[n] for (r, a), n in zip(got[:2], ZONE, strict=False)
        )

    eventually(chaotic, timeout=10)
    system.cli("delete", "dnschaos", "dns-random")
    system.cli("delete", "dnschaos", "dns-static")
    eventually(lambda: answers(system, 1, server) == [real(n) for n in ZONE], timeout=10)
    assert_untouched(system, server)


def test_pause_and_duration(system: System, server: str) -> None:
    system.cli("apply", "-f", "-", stdin=dnschaos("dns-pause", "peer-2", "error"))
    failing = [("SERVFAIL", [])] * len(ZONE)
    eventually(lambda: answers(system, 2, server) == failing, timeout=10)
    system.cli("annotate", "dnschaos", "dns-pause", "experiment.chaos-mesh.org/pause=true")
    eventually(lambda: answers(system, 2, server) == [real(n) for n in ZONE], timeout=10)
    system.cli("annotate", "dnschaos", "dns-pause", "experiment.chaos-mesh.org/pause-")
    eventually(lambda: answers(system, 2, server) == failing, timeout=10)
    system.cli("delete", "dnschaos", "dns-pause")
    eventually(lambda: answers(system, 2, server) == [real(n) for n in ZONE], timeout=10)

    # Seen failing while its 10 s last (from the object's creation: the CLI's exit and the
    # injection's path count against them), then answering again without a delete.
    system.cli("apply", "-f", "-", stdin=dnschaos("dns-short", "peer-2", "error", duration="10s"))
    eventually(lambda: answers(system, 2, server) == failing, timeout=10)
    eventually(lambda: answers(system, 2, server) == [real(n) for n in ZONE], timeout=20)
    assert_untouched(system, server)
    system.cli("delete", "dnschaos", "dns-short")
