"""DNSChaos against real DNS traffic: a DNS server in pod 3 serves a zone, pods 0 and 1 resolve
through it (UDP and TCP); the fault redirects a pod's queries to the injector's responder.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

import pytest

from chaosbus.common.messages import Dns
from chaosbus.injector import faults
from chaosbus.injector.backends import dnsresponder, nft
from chaosbus.injector.faults.dns import table_name

from .conftest import Lab
from .test_kernel_faults import ctx_for

pytestmark = pytest.mark.privileged

ZONE = {"a.chaos.test": "10.77.0.1", "www.a.chaos.test": "10.77.0.2", "b.other.test": "10.77.0.3"}
SERVER_POD, CLIENT, BYSTANDER = 3, 0, 1

DNS_SERVER = """
import json, socket, struct, sys, threading
import dns.message, dns.rcode, dns.rrset
zone = json.loads(sys.argv[1])
def respond(wire):
    q = dns.message.from_wire(wire)
    r = dns.message.make_response(q)
    name = q.question[0].name.to_text().rstrip('.')
    if name in zone and q.question[0].rdtype == 1:
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, 'IN', 'A', zone[name]))
    elif name not in zone:
        r.set_rcode(dns.rcode.NXDOMAIN)
    return r.to_wire()
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', 53)); s.listen(16)
    while True:
        c, _ = s.accept()
        n = struct.unpack('!H', c.recv(2))[0]
        data = b''
        while len(data) < n:
            data += c.recv(n - len(data))
        out = respond(data); c.sendall(struct.pack('!H', len(out)) + out); c.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 53))
threading.Thread(target=tcp, daemon=True).start()
print('ready', flush=True)
while True:
    wire, addr = u.recvfrom(4096)
    u.sendto(respond(wire), addr)
"""

# argv: server ip, JSON [[name, type, tcp?]]; prints JSON [[rcode text, [addresses]] or ["timeout", []]]
RESOLVE = """
import json, sys
import dns.exception, dns.message, dns.query, dns.rcode
server, asks = sys.argv[1], json.loads(sys.argv[2])
out = []
for name, rdtype, tcp in asks:
    q = dns.message.make_query(name, rdtype)
    try:
        r = (dns.query.tcp if tcp else dns.query.udp)(q, server, timeout=1.5)
    except (dns.exception.Timeout, OSError):
        out.append(['timeout', []]); continue
    out.append([dns.rcode.to_text(r.rcode()), sorted(rd.to_text() for rr in r.answer for rd in rr)])
print(json.dumps(out))
"""

Answer = tuple[str, list[str]]


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


def resolve(lab: Lab, pod: int, server: str, asks: list[tuple[str, str, bool]]) -> list[Answer]:
    proc = lab.spawn(pod, [sys.executable, "-c", RESOLVE, server, json.dumps(asks)])
    out, _ = proc.communicate(timeout=30)
    return [(rcode, addrs) for rcode, addrs in json.loads(out)]


def real(name: str) -> Answer:
    return ("NOERROR", [ZONE[name]])


def every_name(tcp: bool = False) -> list[tuple[str, str, bool]]:
    return [(n, "A", tcp) for n in ZONE]


def assert_all_real(lab: Lab, server: str, pods: tuple[int, ...] = (CLIENT, BYSTANDER)) -> None:
    for pod in pods:
        for tcp in (False, True):
            assert resolve(lab, pod, server, every_name(tcp)) == [real(n) for n in ZONE], (pod, tcp)


def dns_tables(lab: Lab, pod: int) -> list[str]:
    return [t for t in nft.list_tables(lab.pods[pod].net.netns_path) if t.startswith(nft.TABLE_PREFIX)]


def assert_clean(lab: Lab) -> None:
    assert not any(dns_tables(lab, p.index) for p in lab.pods)
    assert not dnsresponder.running()


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
    rnd = Dns(action="random", patterns=["*.chaos.test"])
    static = Dns(action="static", patterns=["b.other.t?st"], addresses=["192.0.2.7", "2001:db8::7"])
    ctx_r = ctx_for("dns-random", [lab.pods[CLIENT].server.pid], rnd)
    ctx_s = ctx_for("dns-static", [lab.pods[CLIENT].server.pid], static)
    fault.apply(ctx_r, rnd)
    fault.apply(ctx_s, static)
    try:
        got = resolve(lab, CLIENT, dns_server,
                      [*every_name(), ("www.a.chaos.test", "AAAA", False), ("b.other.test", "AAAA", True)])
        for (rcode, addrs), name in zip(got[:2], ["a.chaos.test", "www.a.chaos.test"], strict=True):
            assert rcode == "NOERROR" and len(addrs) == 1 and addrs[0] != ZONE[name]
        assert got[2] == ("NOERROR", ["192.0.2.7"])
        assert got[3] == ("NOERROR", ["2001:db8::123:12:1"])  # Chaos Mesh's fixed AAAA
        assert got[4] == ("NOERROR", ["2001:db8::7"])
        # the two experiments compose, and each recovers on its own
        fault.recover(ctx_r, rnd)
        assert resolve(lab, CLIENT, dns_server, every_name()) == [
            real("a.chaos.test"), real("www.a.chaos.test"), ("NOERROR", ["192.0.2.7"])]
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
        for r in dnsresponder.running().values():
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
    assert len(dnsresponder.running()) == 1
    victim.kill()
    victim.wait(5)
    if victim.stdout:
        victim.stdout.close()
    assert "gone" in fault.recover(ctx_for("dns-gone", [victim.pid], spec), spec)
    # its process gone, the responder drops the rule and ends by itself (it would otherwise keep
    # a dead pod's netns alive)
    deadline = time.monotonic() + 5
    while dnsresponder.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not dnsresponder.running()
    # the netns lives on here (the pod's server holds it): the table is the sweeper's to find
    path = lab.pods[2].net.netns_path
    assert fault.orphans.find(path) == [table_name("dns-gone", ".")]
    fault.orphans.remove(path, table_name("dns-gone", "."))
    assert_clean(lab)
