"""Real process pods for kernel tests: own bridge, own /24, one netns + TCP server per pod.

Everything is torn down even when set-up fails half-way (an ExitStack unwinds what was made), and
the fixtures then check that nothing is left: no netns, veth, bridge or server process.
Skips (with the reason) unless root with network namespaces and a working nftables.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest

from chaosbus.cli import podnet
from chaosbus.common import netns as nsutil
from chaosbus.injector.backends import nft

PORTS = (8080, 8081)
CONNECT_TIMEOUT_S = 0.3
N_PODS = 4

SERVER = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen(128)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        key.fileobj.accept()[0].close()
"""

# argv: timeout, then a JSON list of [ip, port]; prints a JSON list of booleans (connected?).
CLIENT = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
timeout, targets = float(sys.argv[1]), json.loads(sys.argv[2])
def ok(t):
    try:
        socket.create_connection((t[0], t[1]), timeout=timeout).close()
        return True
    except OSError:
        return False
with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(list(pool.map(ok, targets))))
"""

Link = tuple[int, int | str, int]  # (source pod, destination pod index or literal ip, port)


@dataclass
class Pod:
    index: int
    net: podnet.PodNetwork
    server: subprocess.Popen[str]

    @property
    def ip(self) -> str:
        return self.net.ip

    @property
    def container_id(self) -> str:
        return f"process://{self.server.pid}"


@dataclass
class Lab:
    bridge: str
    subnet: ipaddress.IPv4Network
    pods: list[Pod] = field(default_factory=list)

    def reachable(self, ports: tuple[int, ...] = (PORTS[0],), extra: tuple[tuple[int, str], ...] = ()) -> set[Link]:
        """Every (src, dst, port) TCP connect that succeeds, pod to pod, plus `extra` (src, ip)."""
        jobs: dict[int, list[tuple[int | str, str, int]]] = {p.index: [] for p in self.pods}
        for src in self.pods:
            for dst in self.pods:
                if dst is not src:
                    jobs[src.index] += [(dst.index, dst.ip, port) for port in ports]
        for src_index, ip in extra:
            jobs[src_index] += [(ip, ip, port) for port in ports]
        clients = {
            i: self.spawn(
                i,
                [sys.executable, "-c", CLIENT, str(CONNECT_TIMEOUT_S), json.dumps([[ip, port] for _, ip, port in job])],
            )
            for i, job in jobs.items()
        }
        links: set[Link] = set()
        for i, proc in clients.items():
            out, _ = proc.communicate(timeout=10)
            for (dst, _, port), ok in zip(jobs[i], json.loads(out), strict=True):
                if ok:
                    links.add((i, dst, port))
        return links

    def all_links(self, ports: tuple[int, ...] = (PORTS[0],)) -> set[Link]:
        return {(s.index, d.index, port) for s in self.pods for d in self.pods if s is not d for port in ports}

    def spawn(self, index: int, argv: list[str]) -> subprocess.Popen[str]:
        return podnet.spawn_in_netns(argv, self.pods[index].net.netns_name, stdout=subprocess.PIPE, text=True)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    reason = nft.probe()
    if reason is not None:
        return reason
    name = f"cbt-probe-{os.getpid()}"
    try:
        nsutil.create_named_netns(name)
        nsutil.remove_named_netns(name)
    except OSError as e:
        return f"network namespaces unavailable: {e}"
    return None


@pytest.fixture(scope="session")
def kernel() -> None:
    reason = _why_not()
    if reason is not None:
        print(f"skipping privileged tests: {reason}")
        pytest.skip(f"needs root, network namespaces and nftables: {reason}")


def _free_subnet() -> ipaddress.IPv4Network:
    used = [
        ipaddress.IPv4Address(a.address)
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET
    ]
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    for x in candidates:
        net = ipaddress.IPv4Network(f"10.214.{x}.0/24")
        if not any(a in net for a in used):
            return net
    raise RuntimeError("no free 10.214.x.0/24")


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=5)
    if proc.stdout:
        proc.stdout.close()


def start_pod(lab: Lab, stack: contextlib.ExitStack, name: str, index: int) -> Pod:
    ip = f"{lab.subnet.network_address + 10 + index}/{lab.subnet.prefixlen}"
    stack.callback(podnet.delete_pod_network, name)
    net = podnet.create_pod_network(name, lab.bridge, ip, str(lab.subnet.network_address + 1))
    server = podnet.spawn_in_netns(
        [sys.executable, "-c", SERVER, *map(str, PORTS)], name, stdout=subprocess.PIPE, text=True
    )
    stack.callback(_stop, server)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    return Pod(index=index, net=net, server=server)


def assert_gone(lab: Lab, names: list[str], pids: list[int]) -> None:
    from pyroute2 import IPRoute

    leftovers = [n for n in names if os.path.exists(nsutil.netns_path(n))]
    with IPRoute() as ipr:
        links = [lab.bridge, *map(podnet.host_ifname, names)]
        leftovers += [ifname for ifname in links if ipr.link_lookup(ifname=ifname)]
    leftovers += [f"pid {pid}" for pid in pids if psutil.pid_exists(pid)]
    assert not leftovers, f"fixture left behind: {leftovers}"


@pytest.fixture(scope="session")
def lab(kernel: None) -> Iterator[Lab]:
    tag = f"{random.getrandbits(24):06x}"
    lab = Lab(bridge=f"cbt{tag}", subnet=_free_subnet())
    names = [f"cbt{tag}-p{i}" for i in range(N_PODS)]
    with contextlib.ExitStack() as stack:
        # Registered first, so it runs last: the bridge goes once every veth is gone.
        stack.callback(podnet.delete_bridge_if_unused, lab.bridge)
        for i, name in enumerate(names):
            lab.pods.append(start_pod(lab, stack, name, i))
        yield lab
    assert_gone(lab, names, [p.server.pid for p in lab.pods])
