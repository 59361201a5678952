"""HTTPChaos cost: apply -> in effect and recovery per target (p50/p99, 1 and 100 targets), and the
proxy's added latency and throughput for requests no rule selects, against direct in the same run.

`python -m bench.bench_http [--sizes 1,100] [--requests 500]` (root). Each target is a bare netns
(loopback up, a `sleep` process as the container) through the http fault exactly as the injector
calls it. Apply is timed until the fault returns: by then the redirect table is committed and the
proxy listens, so the next connection to the port reaches the proxy (checked on the first target
of each size: a connection to a port nothing listens on is accepted). The latency run: an HTTP/1.1
server on 127.0.0.1 inside one netns, sequential GETs on one kept-alive connection from a thread in
that netns, first direct, then through an HTTPChaos whose path selects nothing; then a 4 MiB body
fetched both ways (the proxy streams bodies no rule rewrites).

Nothing is left behind: namespaces, processes, tables and proxies go even when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
from typing import Any

from bench.podlab import fault_context, ms, netns_targets, pct
from chaosbus.common import netns as nsu
from chaosbus.common.messages import Http
from chaosbus.injector import faults
from chaosbus.injector.backends.kit import process_backends

PORT = 8080
BIG = 4 * 1024 * 1024
BIG_RUNS = 5
SERVER = """
import http.server
import sys
small, big = b'{"ok": true}', b'x' * int(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True  # headers and body are two writes: Nagle would hold the body ~40 ms
    def do_GET(self):
        body = big if self.path == '/big' else small
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[2])), H)
print('ready', flush=True)
s.serve_forever()
"""


def accepted(path: str) -> bool:
    """Whether a connection to PORT in the namespace is accepted (nothing listens there but a proxy)."""

    def run() -> bool:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
            return True
        except ConnectionRefusedError:
            return False
        except ConnectionResetError:
            return True  # accepted, then reset by the proxy (its upstream refused) before connect returned

    return nsu.run_in_netns(path, run)


def apply_recover(size: int, tag: str) -> dict[str, Any]:
    fault = faults.get("http")
    spec = Http(target="Request", port=PORT, abort=True)
    with netns_targets(size, f"cbhttp{tag}") as made:
        ctxs = [fault_context(f"bench-http-{tag}", proc.pid, spec) for _, proc in made]
        first = nsu.netns_path(made[0][0])
        assert not accepted(first)
        applied, recovered = [], []
        for c in ctxs:
            t = time.perf_counter()
            fault.apply(c, spec)
            applied.append(time.perf_counter() - t)
        assert accepted(first)
        for c in ctxs:
            t = time.perf_counter()
            fault.recover(c, spec)
            recovered.append(time.perf_counter() - t)
        assert not process_backends().http.running() and not accepted(first)
    return {"apply": applied, "recover": recovered}


# argv: port, count, big runs; prints JSON [[seconds per small GET], [seconds per 4 MiB GET]]. A
# process of its own: a client thread in the bench's process would share the GIL with the proxy.
CLIENT = """
import http.client, json, sys, time
port, count, runs = map(int, sys.argv[1:4])
conn = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
small, big = [], []
for path, out, n in (('/small', small, count), ('/big', big, runs)):
    for _ in range(n):
        t = time.perf_counter()
        conn.request('GET', path)
        resp = conn.getresponse()
        resp.read()
        out.append(time.perf_counter() - t)
        assert resp.status == 200
print(json.dumps([small, big]))
"""


def request_times(path: str, count: int) -> tuple[list[float], float]:
    """`count` sequential GETs on one connection, and the median seconds a 4 MiB body takes."""
    done = subprocess.run(
        ["nsenter", f"--net={path}", sys.executable, "-c", CLIENT, str(PORT), str(count), str(BIG_RUNS)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    small, big = json.loads(done.stdout)
    return small, pct(big, 50)


def added_latency(count: int, tag: str) -> dict[str, Any]:
    fault = faults.get("http")
    spec = Http(target="Request", port=PORT, path="/nothing/selects/this", abort=True)
    with netns_targets(1, f"cbhttp{tag}") as made:
        name, proc = made[0]
        path = nsu.netns_path(name)
        server = subprocess.Popen(
            ["nsenter", f"--net={path}", sys.executable, "-c", SERVER, str(BIG), str(PORT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            request_times(path, 20)  # warm-up
            t = time.perf_counter()
            direct, direct_big = request_times(path, count)
            direct_wall = time.perf_counter() - t - direct_big * BIG_RUNS
            c = fault_context(f"bench-http-lat-{tag}", proc.pid, spec)
            fault.apply(c, spec)
            try:
                request_times(path, 20)
                t = time.perf_counter()
                through, through_big = request_times(path, count)
                through_wall = time.perf_counter() - t - through_big * BIG_RUNS
            finally:
                fault.recover(c, spec)
        finally:
            server.kill()
            server.wait()
    return {
        "direct": direct,
        "through": through,
        "direct_rps": count / direct_wall,
        "through_rps": count / through_wall,
        "direct_mbps": BIG / direct_big / 1e6,
        "through_mbps": BIG / through_big / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.bench_http", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--sizes", default="1,100")
    p.add_argument("--requests", type=int, default=500)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench_http needs root (network namespaces, nftables)")
    tag = f"{random.getrandbits(16):04x}"
    for size in [int(s) for s in args.sizes.split(",")]:
        r = apply_recover(size, f"{tag}s{size}")
        print(f"HTTPChaos {size:>4} target(s): apply->in effect {ms(r['apply'])}; recover {ms(r['recover'])}")
    lat = added_latency(args.requests, f"{tag}l")
    added = pct(lat["through"], 50) - pct(lat["direct"], 50)
    print(
        f"unselected request, direct:  {ms(lat['direct'])}, {lat['direct_rps']:.0f} requests/s sequential, "
        f"4 MiB body at {lat['direct_mbps']:.0f} MB/s"
    )
    print(
        f"unselected request, through: {ms(lat['through'])}, {lat['through_rps']:.0f} requests/s sequential, "
        f"4 MiB body at {lat['through_mbps']:.0f} MB/s"
    )
    print(f"added by the proxy: p50 {added * 1e3:.3f} ms (goal <= 1 ms: {'PASS' if added <= 1e-3 else 'FAIL'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
