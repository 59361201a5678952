"""UDP traffic between network namespaces, measured per packet: one long-lived agent process per
namespace (starting a Python process costs about a second under emulation, so each namespace gets
one, driven over its stdin/stdout with one JSON line per command).

Every agent answers echo requests and records what it receives on PROBE_PORT. A datagram carries
its kind, a run id, a sequence number and the sender's CLOCK_MONOTONIC (one clock for every
namespace of a machine), so the receiver knows each packet's one-way latency, which packets were
lost or duplicated, in which order they arrived, and whether the payload arrived intact.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chaosbus.cli import podnet

PROBE_PORT = 9200

AGENT = r"""
import json, socket, struct, sys, threading, time
HDR = struct.Struct("!cIId")  # kind (E echo, R reply, S sample), run, seq, sent (monotonic s)
FILL = 0xA5
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:  # room for every datagram of a run even when this process is starved of CPU (root: past rmem_max)
    sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 8 << 20)
except OSError:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
sock.bind(("0.0.0.0", int(sys.argv[1])))
runs, lock = {}, threading.Lock()

def serve():
    while True:
        data, addr = sock.recvfrom(65535)
        now = time.monotonic()
        if len(data) < HDR.size:
            continue
        kind, run, seq, sent = HDR.unpack_from(data)
        if kind == b"E":
            sock.sendto(b"R" + data[1:], addr)
        elif kind == b"S":
            intact = data.count(FILL, HDR.size) == len(data) - HDR.size
            with lock:
                runs.setdefault(run, []).append([seq, (now - sent) * 1000, intact])

def rtt(ip, port, count, interval, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    out = []
    for seq in range(count):
        sent = time.monotonic()
        s.sendto(HDR.pack(b"E", 0, seq, sent), (ip, port))
        got = None
        while got is None:
            try:
                data = s.recv(65535)
            except socket.timeout:
                break
            if len(data) >= HDR.size and HDR.unpack_from(data)[2] == seq:
                got = (time.monotonic() - sent) * 1000
        out.append(got)
        time.sleep(max(0.0, interval - (time.monotonic() - sent)))
    s.close()
    return out

def send(ip, port, run, count, size, interval):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pad = bytes([FILL]) * max(0, size - HDR.size)
    start = time.monotonic()
    for seq in range(count):
        s.sendto(HDR.pack(b"S", run, seq, time.monotonic()) + pad, (ip, port))
        time.sleep(max(0.0, start + (seq + 1) * interval - time.monotonic()))
    s.close()
    return count

def received(run, settle):
    time.sleep(settle)
    with lock:
        return runs.pop(run, [])

def snmp():
    out, lines = {}, open("/proc/net/snmp").read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        proto = names.split(":")[0]
        out[proto] = dict(zip(names.split()[1:], map(int, values.split()[1:])))
    return out

threading.Thread(target=serve, daemon=True).start()
print(json.dumps("ready"), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd.pop("op")
    print(json.dumps({"rtt": rtt, "send": send, "received": received, "snmp": snmp}[op](**cmd)), flush=True)
"""


@dataclass(frozen=True)
class Arrival:
    seq: int
    one_way_ms: float
    intact: bool


class Agent:
    """The agent in one namespace."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def call(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"probe agent died (exit {self.proc.poll()})"
        return json.loads(line)

    def rtts(self, ip: str, count: int = 10, interval: float = 0.02, timeout: float = 1.0) -> list[float | None]:
        """Round-trip times in ms of `count` echo requests, one at a time (None: no reply in time)."""
        return list(self.call("rtt", ip=ip, port=PROBE_PORT, count=count, interval=interval, timeout=timeout))

    def send(self, ip: str, run: int, count: int, size: int = 64, interval: float = 0.001) -> None:
        self.call("send", ip=ip, port=PROBE_PORT, run=run, count=count, size=size, interval=interval)

    def arrivals(self, run: int, settle: float = 0.5) -> list[Arrival]:
        """What arrived of `run`, in arrival order, once nothing more is expected after `settle` s."""
        return [Arrival(seq, ms, intact) for seq, ms, intact in self.call("received", run=run, settle=settle)]

    def snmp(self) -> dict[str, dict[str, int]]:
        """This namespace's /proc/net/snmp counters, e.g. ["Udp"]["InCsumErrors"]."""
        return dict(self.call("snmp"))


@contextlib.contextmanager
def agents(netns_paths: dict[int, str]) -> Iterator[dict[int, Agent]]:
    """A probe agent in each namespace (key: any id the caller uses)."""
    procs: dict[int, subprocess.Popen[str]] = {}
    try:
        for i, path in netns_paths.items():
            procs[i] = podnet.spawn_in_netns(
                [sys.executable, "-c", AGENT, str(PROBE_PORT)],
                path,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        out = {i: Agent(p) for i, p in procs.items()}
        for a in out.values():
            assert a.proc.stdout is not None
            line = a.proc.stdout.readline()
            assert line.strip() == '"ready"', f"probe agent did not start (exit {a.proc.poll()})"
        yield out
    finally:
        for p in procs.values():
            p.kill()
            p.wait(timeout=5)
            for stream in (p.stdin, p.stdout):
                if stream:
                    stream.close()


def fastest(values: list[float | None]) -> float:
    """The smallest latency: netem's delay is a floor no packet goes below, while a starved
    process (emulation on a loaded machine) only ever adds to some packets' latency.
    """
    got = [v for v in values if v is not None]
    assert got, "no packet came back"
    return min(got)
