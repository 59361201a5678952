"""Helpers for the shaping kernel tests: measure TCP goodput between lab pods (receiver side, after
the first 64 KiB so the token bucket's initial burst does not count), read a device's tc objects,
and drive the network-shaping fault the way the injector does.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator

from chaosbus.common.messages import FaultSpec, Shaping, TargetAction
from chaosbus.injector import faults, runtime
from chaosbus.injector.backends import tc, tcdev
from chaosbus.injector.backends.netnslink import NetnsLink
from chaosbus.injector.backends.tcwire import TcObject

from .conftest import Lab

SINK_PORTS = (9100, 9101)
WARMUP_BYTES = 64 * 1024

# argv: ports. Prints one JSON line per finished connection: {"port", "bits_per_s"} measured from the
# moment WARMUP_BYTES had arrived to the last byte.
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
def sinks(lab: Lab) -> Iterator[dict[int, subprocess.Popen[str]]]:
    """A goodput sink on SINK_PORTS in every lab pod."""
    procs = {p.index: lab.spawn(p.index, [sys.executable, "-c", SINK, *map(str, SINK_PORTS)]) for p in lab.pods}
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


def goodput(lab: Lab, sinks: dict[int, subprocess.Popen[str]], src: int, dst: int, port: int = SINK_PORTS[0],
            seconds: float = 2.5) -> float:
    """TCP goodput in bit/s from pod `src` to pod `dst`:`port` over `seconds`."""
    sender = lab.spawn(src, [sys.executable, "-c", SOURCE, lab.pods[dst].ip, str(port), str(seconds)])
    sender.communicate(timeout=seconds + 30)
    assert sender.returncode == 0, f"sender {src}->{dst}:{port} failed"
    out = sinks[dst].stdout
    assert out is not None
    result = json.loads(out.readline())
    assert result["port"] == port
    return float(result["bits_per_s"])


def tree(netns_path: str, device: str = "eth0") -> list[TcObject]:
    """Every qdisc, class and filter of the device (a fresh link: nothing stays pinned)."""
    link = NetnsLink(netns_path)
    try:
        async def job(ipr: object) -> list[TcObject]:
            index, _ = tcdev.find_device(device, "")
            return await tcdev.dump(ipr, index)
        return link.run(job)
    finally:
        link.close()


def identities(objects: list[TcObject]) -> set[tuple[object, ...]]:
    return {o.identity for o in objects}


def ctx_for(uid: str, pid: int, spec: FaultSpec, selector: str = ".") -> faults.FaultContext:
    ids = [f"process://{pid}"]
    action = TargetAction(target_id=f"default/pod-{pid}", selector_key=selector, op="apply", namespace="default",
                          pod_name="pod", container_ids=ids, fault=spec)
    return faults.FaultContext(experiment_uid=uid, experiment_name=uid, namespace="default", action=action,
                               containers=[runtime.resolve(i) for i in ids])


class Shaped:
    """One shaping experiment side on one lab pod, applied and recovered like the injector does."""

    def __init__(self, lab: Lab, uid: str, pod: int, spec: Shaping, selector: str = ".") -> None:
        self.lab, self.uid, self.pod, self.spec, self.selector = lab, uid, pod, spec, selector
        self.fault = faults.get("network-shaping")

    def _ctx(self) -> faults.FaultContext:
        return ctx_for(self.uid, self.lab.pods[self.pod].server.pid, self.spec, self.selector)

    def apply(self) -> str:
        return self.fault.apply(self._ctx(), self.spec)

    def recover(self) -> str:
        return self.fault.recover(self._ctx(), self.spec)


def shaper() -> tc.Shaper:
    from chaosbus.injector.faults import shaping

    return shaping.shaper()
