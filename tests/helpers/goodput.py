"""TCP goodput between network namespaces, measured at the receiver after the first 64 KiB (so a
token bucket's initial burst does not count): a sink process per namespace, a sender per transfer.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator

from chaosbus.cli import podnet

SINK_PORTS = (9100, 9101)
WARMUP_BYTES = 64 * 1024

# argv: ports. Prints one JSON line per finished connection: {"port", "bits_per_s"}.
SINK = f"""
import json, selectors, socket, sys, threading, time
def serve(conn, port):
    n, t0, n0, last = 0, None, 0, None
    while True:
        data = conn.recv(65536)
        if not data:
            break
        n += len(data)
        last = time.monotonic()
        if t0 is None and n >= {WARMUP_BYTES}:
            t0, n0 = last, n
    conn.close()
    rate = (n - n0) * 8 / (last - t0) if t0 and last > t0 else 0.0
    print(json.dumps({{"port": port, "bits_per_s": rate}}), flush=True)
sel = selectors.DefaultSelector()
for port in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen(16)
    sel.register(s, selectors.EVENT_READ, int(port))
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        threading.Thread(target=serve, args=(conn, key.data), daemon=True).start()
"""

SOURCE = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
block, end = b"x" * 16384, time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    c.sendall(block)
c.close()
"""


@contextlib.contextmanager
def sinks(netns_paths: dict[int, str]) -> Iterator[dict[int, subprocess.Popen[str]]]:
    """A goodput sink on SINK_PORTS in each namespace (key: any id the caller uses)."""
    procs = {
        i: podnet.spawn_in_netns(
            [sys.executable, "-c", SINK, *map(str, SINK_PORTS)], path, stdout=subprocess.PIPE, text=True
        )
        for i, path in netns_paths.items()
    }
    try:
        for proc in procs.values():
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield procs
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(timeout=5)
            if proc.stdout:
                proc.stdout.close()


def goodput(
    src_netns: str, sink: subprocess.Popen[str], dst_ip: str, port: int = SINK_PORTS[0], seconds: float = 2.5
) -> float:
    """TCP goodput in bit/s from namespace `src_netns` to `dst_ip`:`port` (served by `sink`)."""
    sender = podnet.spawn_in_netns([sys.executable, "-c", SOURCE, dst_ip, str(port), str(seconds)], src_netns)
    sender.wait(timeout=seconds + 30)
    assert sender.returncode == 0, f"sender to {dst_ip}:{port} failed"
    assert sink.stdout is not None
    result = json.loads(sink.stdout.readline())
    assert result["port"] == port
    return float(result["bits_per_s"])
