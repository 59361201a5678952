"""DNS on real traffic for DNSChaos tests: a zone server and a resolving client, run as processes
inside a pod's network namespace (argv only).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from chaosbus.common import netns

ZONE = {"a.chaos.test": "10.77.0.1", "www.a.chaos.test": "10.77.0.2", "b.other.test": "10.77.0.3"}

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
Ask = tuple[str, str, bool]  # name, type, over TCP


def real(name: str) -> Answer:
    return ("NOERROR", [ZONE[name]])


def every_name(tcp: bool = False) -> list[Ask]:
    return [(n, "A", tcp) for n in ZONE]


def in_netns(netns_path: str, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(["nsenter", f"--net={netns_path}", *argv], stdout=subprocess.PIPE, text=True)


@contextmanager
def zone_server(netns_path: str) -> Iterator[None]:
    """The zone served on port 53 (UDP and TCP) inside the namespace."""
    proc = in_netns(netns_path, [sys.executable, "-c", DNS_SERVER, json.dumps(ZONE)])
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait(5)
        if proc.stdout:
            proc.stdout.close()


def resolve(netns_path: str, server: str, asks: list[Ask]) -> list[Answer]:
    """Each question sent from inside the namespace straight to `server` (no resolv.conf involved)."""
    proc = in_netns(netns_path, [sys.executable, "-c", RESOLVE, server, json.dumps(asks)])
    out, _ = proc.communicate(timeout=60)
    return [(rcode, addrs) for rcode, addrs in json.loads(out)]


def loopback_udp_sockets(netns_path: str) -> int:
    """UDP sockets bound to 127.0.0.1 in the namespace: a running chaos responder has one."""

    def count() -> int:
        with open("/proc/thread-self/net/udp") as f:
            return sum(1 for line in f.readlines()[1:] if line.split()[1].startswith("0100007F:"))

    return netns.run_in_netns(netns_path, count)
