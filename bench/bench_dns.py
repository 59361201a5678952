"""DNSChaos cost: apply -> in effect and recovery per target (p50/p99, 1 and 100 targets), and the
responder's added latency and throughput for queries no rule matches, against direct in the same run.

`python -m bench.bench_dns [--sizes 1,100] [--queries 500]` (root). Each target is a bare netns
(loopback up, a `sleep` process as the container) through the dns fault exactly as the injector
calls it. Apply is timed until the fault returns: by then the redirect table is committed and the
responder listens, so the next query is answered by chaos (checked on the first target of each
size). The latency run: a zone server on 127.0.0.1:53 inside one netns, sequential UDP queries from
a thread in that netns, first direct, then through a DNSChaos whose pattern matches nothing.

Nothing is left behind: namespaces, processes, tables and responders go even when interrupted.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from typing import Any

import dns.message
import dns.query
import dns.rcode

from bench.podlab import fault_context, ms, netns_targets, pct
from chaosbus.common import netns as nsu
from chaosbus.common.messages import Dns
from chaosbus.injector import faults
from chaosbus.injector.backends.kit import process_backends

ZONE_SERVER = """
import socket, dns.message, dns.rrset
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.0.0.1', 53))
print('ready', flush=True)
while True:
    wire, addr = u.recvfrom(4096)
    q = dns.message.from_wire(wire); r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, 'IN', 'A', '10.77.0.1'))
    u.sendto(r.to_wire(), addr)
"""


def query_times(path: str, count: int) -> tuple[list[float], list[int]]:
    def run() -> tuple[list[float], list[int]]:
        out, codes = [], []
        for i in range(count):
            q = dns.message.make_query(f"n{i}.bench.test", "A")
            t = time.perf_counter()
            r = dns.query.udp(q, "127.0.0.1", timeout=2)
            out.append(time.perf_counter() - t)
            codes.append(r.rcode())
        return out, codes

    return nsu.run_in_netns(path, run)


def apply_recover(size: int, tag: str) -> dict[str, Any]:
    fault = faults.get("dns")
    spec = Dns(action="error")
    with netns_targets(size, f"cbdns{tag}") as made:
        ctxs = [fault_context(f"bench-dns-{tag}", proc.pid, spec) for _, proc in made]
        applied, recovered = [], []
        for c in ctxs:
            t = time.perf_counter()
            fault.apply(c, spec)
            applied.append(time.perf_counter() - t)
        first = nsu.netns_path(made[0][0])
        _, codes = query_times(first, 1)  # no server: only chaos answers
        assert codes == [dns.rcode.SERVFAIL], codes
        for c in ctxs:
            t = time.perf_counter()
            fault.recover(c, spec)
            recovered.append(time.perf_counter() - t)
        assert not process_backends().dns.running()
    return {"apply": applied, "recover": recovered}


def added_latency(count: int, tag: str) -> dict[str, Any]:
    fault = faults.get("dns")
    spec = Dns(action="error", patterns=["nothing.matches.this"])
    with netns_targets(1, f"cbdns{tag}") as made:
        name, proc = made[0]
        path = nsu.netns_path(name)
        server = subprocess.Popen(
            ["nsenter", f"--net={path}", sys.executable, "-c", ZONE_SERVER], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            query_times(path, 20)  # warm-up
            t = time.perf_counter()
            direct, _ = query_times(path, count)
            direct_wall = time.perf_counter() - t
            c = fault_context(f"bench-dns-lat-{tag}", proc.pid, spec)
            fault.apply(c, spec)
            try:
                query_times(path, 20)
                t = time.perf_counter()
                through, codes = query_times(path, count)
                through_wall = time.perf_counter() - t
                assert set(codes) == {dns.rcode.NOERROR}
            finally:
                fault.recover(c, spec)
        finally:
            server.kill()
            server.wait()
    return {
        "direct": direct,
        "through": through,
        "direct_qps": count / direct_wall,
        "through_qps": count / through_wall,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.bench_dns", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--sizes", default="1,100")
    p.add_argument("--queries", type=int, default=500)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench_dns needs root (network namespaces, nftables)")
    tag = f"{random.getrandbits(16):04x}"
    for size in [int(s) for s in args.sizes.split(",")]:
        r = apply_recover(size, f"{tag}s{size}")
        print(f"DNSChaos {size:>4} target(s): apply->in effect {ms(r['apply'])}; recover {ms(r['recover'])}")
    lat = added_latency(args.queries, f"{tag}l")
    added = pct(lat["through"], 50) - pct(lat["direct"], 50)
    print(f"unmatched query, direct:  {ms(lat['direct'])}, {lat['direct_qps']:.0f} queries/s sequential")
    print(f"unmatched query, through: {ms(lat['through'])}, {lat['through_qps']:.0f} queries/s sequential")
    print(f"added by the responder: p50 {added * 1e3:.3f} ms (goal <= 1 ms: {'PASS' if added <= 1e-3 else 'FAIL'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
