"""DNSChaos against real DNS traffic: a DNS server in pod 3 serves a zone, pods 0 and 1 resolve
through it (UDP and TCP); the fault redirects a pod's queries to the injector's responder.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

import pytest
from helpers import dnsprobe
from helpers.dnsprobe import DNS_SERVER, ZONE, Answer, Ask, every_name, real

from chaosbus.common.messages import Dns
from chaosbus.injector import faults
from chaosbus.injector.backends import nft
from chaosbus.injector.backends.kit import build, process_backends
from chaosbus.injector.faults.dns import table_name

from .conftest import Lab
from .test_kernel_faults import ctx_for

pytestmark = pytest.mark.privileged

SERVER_POD, CLIENT, BYSTANDER = 3, 0, 1


@pytest.fixture(scope="module")
def dns_server(lab: Lab) -> Iterator[str]:
    proc = lab.spawn(SERVER_POD, [sys.executable, "-c", DNS_SERVER, json.dumps(ZONE)])
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield lab.pods[SERVER_POD].ip
    finally:
        proc.kill()
        proc.wait(5)
        if proc.stdout:
            proc.stdout.close()


def resolve(lab: Lab, pod: int, server: str, asks: list[Ask]) -> list[Answer]:
    return dnsprobe.resolve(lab.pods[pod].net.netns_path, server, asks)


def assert_all_real(lab: Lab, server: str, pods: tuple[int, ...] = (CLIENT, BYSTANDER)) -> None:
    for pod in pods:
        for tcp in (False, True):
            assert resolve(lab, pod, server, every_name(tcp)) == [real(n) for n in ZONE], (pod, tcp)


def dns_tables(lab: Lab, pod: int) -> list[str]:
    return [t for t in nft.list_tables(lab.pods[pod].net.netns_path) if t.startswith(nft.TABLE_PREFIX)]


def assert_clean(lab: Lab) -> None:
    assert not any(dns_tables(lab, p.index) for p in lab.pods)
    assert not process_backends().dns.running()
    assert not any(dnsprobe.loopback_udp_sockets(p.net.netns_path) for p in lab.pods)


def test_error_fails_matching_names_with_servfail_and_forwards_the_rest(lab: Lab, dns_server: str) -> None:
    assert_all_real(lab, dns_server)
    spec = Dns(action="error", patterns=["a.chaos.test"])
    ctx = ctx_for("dns-error", [lab.pods[CLIENT].server.pid], spec)
    fault = faults.get("dns")
    fault.apply(ctx, spec)
    try:
        for tcp in (False, True):
            got = resolve(lab, CLIENT, dns_server, every_name(tcp))
            # a bare domain matches itself and its subdomains; the other name reaches the real server
            assert got == [("SERVFAIL", []), ("SERVFAIL", []), real("b.other.test")], tcp
        assert resolve(lab, CLIENT, dns_server, [("nope.other.test", "A", False)]) == [("NXDOMAIN", [])]
        assert_all_real(lab, dns_server, pods=(BYSTANDER,))
    finally:
        fault.recover(ctx, spec)
    assert_clean(lab)
    assert_all_real(lab, dns_server)


def test_random_and_static_answer_instead_of_the_server(lab: Lab, dns_server: str) -> None:
    fault = faults.get("dns")
    rnd = Dns(action="random", patterns=["a.chaos.*"])
    static = Dns(action="static", patterns=["b.other.t?st"], addresses=["192.0.2.7", "2001:db8::7"])
    ctx_r = ctx_for("dns-random", [lab.pods[CLIENT].server.pid], rnd)
    ctx_s = ctx_for("dns-static", [lab.pods[CLIENT].server.pid], static)
    fault.apply(ctx_r, rnd)
    fault.apply(ctx_s, static)
    try:
        got = resolve(
            lab,
            CLIENT,
            dns_server,
            [*every_name(), ("www.a.chaos.test", "AAAA", False), ("b.other.test", "AAAA", True)],
        )
        for (rcode, addrs), name in zip(got[:2], ["a.chaos.test", "www.a.chaos.test"], strict=True):
            assert rcode == "NOERROR" and len(addrs) == 1 and addrs[0] != ZONE[name]
        assert got[2] == ("NOERROR", ["192.0.2.7"])
        assert got[3] == ("NOERROR", ["2001:db8::123:12:1"])  # Chaos Mesh's fixed AAAA
        assert got[4] == ("NOERROR", ["2001:db8::7"])
        # the two experiments compose, and each recovers on its own
        fault.recover(ctx_r, rnd)
        assert resolve(lab, CLIENT, dns_server, every_name()) == [
            real("a.chaos.test"),
            real("www.a.chaos.test"),
            ("NOERROR", ["192.0.2.7"]),
        ]
    finally:
        fault.recover(ctx_r, rnd)
        fault.recover(ctx_s, static)
    assert_clean(lab)
    assert_all_real(lab, dns_server)


def test_the_kernel_ends_the_redirect_at_its_deadline_even_without_a_responder(lab: Lab, dns_server: str) -> None:
    spec = Dns(action="error")
    deadline = float(int(time.time()) + 3)
    ctx = ctx_for("dns-deadline", [lab.pods[CLIENT].server.pid], spec, deadline=deadline)
    fault = faults.get("dns")
    fault.apply(ctx, spec)
    try:
        assert resolve(lab, CLIENT, dns_server, [("b.other.test", "A", False)]) == [("SERVFAIL", [])]
        # the injector dies: its responder with it (simulated by stopping it), the table stays
        for r in process_backends().dns.running().values():
            r.stop()
        time.sleep(max(0.0, deadline - time.time()) + 0.1)
        assert dns_tables(lab, CLIENT) == [table_name("dns-deadline", ".")]
        assert_all_real(lab, dns_server, pods=(CLIENT,))
    finally:
        fault.recover(ctx, spec)
    assert_clean(lab)


def test_a_gone_target_counts_as_recovered_and_its_responder_stops(lab: Lab) -> None:
    victim = lab.spawn(2, [sys.executable, "-c", "import time; time.sleep(60)"])
    spec = Dns(action="error")
    ctx = ctx_for("dns-gone", [victim.pid], spec)
    fault = faults.get("dns")
    fault.apply(ctx, spec)
    assert len(process_backends().dns.running()) == 1
    victim.kill()
    victim.wait(5)
    if victim.stdout:
        victim.stdout.close()
    assert "gone" in fault.recover(ctx_for("dns-gone", [victim.pid], spec), spec)
    # its process gone, the responder drops the rule and ends by itself (it would otherwise keep
    # a dead pod's netns alive)
    deadline = time.monotonic() + 5
    while process_backends().dns.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_backends().dns.running()
    # the netns lives on here (the pod's server holds it): the table is the sweeper's to find
    path = lab.pods[2].net.netns_path
    assert fault.orphans.find(path, process_backends()) == [table_name("dns-gone", ".")]
    fault.orphans.remove(path, table_name("dns-gone", "."), process_backends())
    assert_clean(lab)


def test_a_responder_belongs_to_the_backends_that_started_it(lab: Lab, dns_server: str) -> None:
    """Two injectors in one process (here: two sets of backends) share no responder: each sees,
    serves and stops only its own."""
    mine, theirs = build(), build()
    spec = Dns(action="error", patterns=["a.chaos.test"])
    pid = lab.pods[CLIENT].server.pid
    fault = faults.get("dns")
    fault.apply(ctx_for("dns-mine", [pid], spec, backends=mine), spec)
    try:
        assert len(mine.dns.running()) == 1
        assert not theirs.dns.running() and not process_backends().dns.running()
        # the other backends' recover of another experiment neither sees nor stops this responder
        fault.recover(ctx_for("dns-theirs", [pid], spec, backends=theirs), spec)
        assert len(mine.dns.running()) == 1
        assert resolve(lab, CLIENT, dns_server, [("a.chaos.test", "A", False)]) == [("SERVFAIL", [])]
    finally:
        fault.recover(ctx_for("dns-mine", [pid], spec, backends=mine), spec)
    assert not mine.dns.running()
    assert_clean(lab)
