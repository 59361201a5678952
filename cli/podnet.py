"""Networking of local "process pods": a named netns per pod, a veth to a host bridge, an address.

Layout (defaults; every function takes explicit parameters so tests use their own bridge/subnet):

    host netns: bridge cb0 10.213.0.1/16 ── cbv<8 hex> ══ veth ══ eth0 (pod netns) 10.213.x.y/16

Netlink goes through pyroute2 only (no `ip` subprocess). pyroute2 0.9's sync `IPRoute` drives its
own event loop and fails inside a running asyncio loop, so every public function here runs its
netlink work on a helper thread when called from an event-loop thread; from `asyncio.to_thread`
or plain threads it runs inline. Work inside a pod netns runs on a short-lived thread that entered
it (`chaosbus.common.netns.run_in_netns`): nothing forks, nothing else changes namespace.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import hashlib
import ipaddress
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from socket import AF_INET
from typing import Any, ParamSpec, TypeVar

from pyroute2 import IPRoute, NetlinkError

from chaosbus.common import netns as nsutil

DEFAULT_BRIDGE = "cb0"
DEFAULT_SUBNET = "10.213.0.0/16"
DEFAULT_GATEWAY = "10.213.0.1"
DEFAULT_GATEWAY_CIDR = "10.213.0.1/16"
POD_IFNAME = "eth0"

_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NETNS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class PodNetwork:
    """The network of one process pod, as created by `create_pod_network`."""

    netns_name: str
    netns_path: str
    host_ifname: str
    bridge: str
    ip_cidr: str  # e.g. 10.213.0.5/16
    gateway: str

    @property
    def ip(self) -> str:
        return str(ipaddress.IPv4Interface(self.ip_cidr).ip)


def _off_loop(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call `fn`, on a helper thread if the calling thread is running an asyncio loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args, **kwargs)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def host_ifname(netns_name: str) -> str:
    """Host-side veth name of a pod: derived from the netns name, so lookups need no state."""
    return "cbv" + hashlib.sha1(netns_name.encode()).hexdigest()[:8]


def _check_ifname(name: str) -> None:
    if not _IFNAME.match(name):
        raise ValueError(f"invalid interface name {name!r} (1-15 of [A-Za-z0-9_.-])")


def _check_netns_name(name: str) -> None:
    if not _NETNS_NAME.match(name) or name in (".", ".."):
        raise ValueError(f"invalid netns name {name!r} (1-64 of [A-Za-z0-9_.-])")


def _lookup(ipr: Any, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _ignore(codes: tuple[int, ...], call: Callable[[], object]) -> None:
    try:
        call()
    except NetlinkError as e:
        if e.code not in codes:
            raise


def ensure_bridge(bridge: str = DEFAULT_BRIDGE, gateway_cidr: str = DEFAULT_GATEWAY_CIDR) -> int:
    """Create (if missing) the Linux bridge `bridge` with address `gateway_cidr`, up. Idempotent.

    Returns:
        The bridge's ifindex.
    """
    _check_ifname(bridge)
    return _off_loop(_ensure_bridge, bridge, ipaddress.IPv4Interface(gateway_cidr))


def create_pod_network(
    netns_name: str,
    bridge: str = DEFAULT_BRIDGE,
    ip_cidr: str = "",
    gateway: str = DEFAULT_GATEWAY,
) -> PodNetwork:
    """Create netns `netns_name` wired to `bridge` with address `ip_cidr` and a default route.

    Idempotent: an already complete pod network is returned as is. A partial one (an earlier
    crash) is removed and rebuilt, and a failure mid-way removes whatever this call made.
    A process still inside a rebuilt netns keeps the old, now unreachable, namespace.
    The bridge is ensured with address `gateway` and the pod's prefix length.

    Raises:
        ValueError: a bad name or address, or a gateway outside the pod's subnet.
    """
    _check_netns_name(netns_name)
    _check_ifname(bridge)
    iface = ipaddress.IPv4Interface(ip_cidr)
    gw = ipaddress.IPv4Address(gateway)
    if gw not in iface.network or gw == iface.ip:
        raise ValueError(f"gateway {gateway} must be another address inside {iface.network}")
    net = PodNetwork(
        netns_name=netns_name,
        netns_path=nsutil.netns_path(netns_name),
        host_ifname=host_ifname(netns_name),
        bridge=bridge,
        ip_cidr=str(iface),
        gateway=str(gw),
    )
    return _off_loop(_create_pod_network, net)


def delete_pod_network(netns_name: str) -> bool:
    """Remove a pod's veth pair and netns. Missing pieces are fine.

    Returns:
        True if anything was removed.
    """
    _check_netns_name(netns_name)
    return _off_loop(_delete_pod_network, netns_name)


def delete_bridge_if_unused(bridge: str) -> bool:
    """Delete `bridge` if no interface is attached to it.

    Returns:
        True if the bridge was deleted.
    """
    _check_ifname(bridge)
    return _off_loop(_delete_bridge_if_unused, bridge)


# --- netlink work (sync pyroute2; run by _off_loop) --------------------------------------------


def _ensure_bridge(bridge: str, gw: ipaddress.IPv4Interface) -> int:
    with IPRoute() as ipr:
        if _lookup(ipr, bridge) is None:
            # EEXIST: a concurrent caller won the race, which is just as good.
            _ignore((errno.EEXIST,), lambda: ipr.link("add", ifname=bridge, kind="bridge"))
        index = _lookup(ipr, bridge)
        if index is None:
            raise RuntimeError(f"bridge {bridge} vanished while being created")
        _ignore(
            (errno.EEXIST,), lambda: ipr.addr("add", index=index, address=str(gw.ip), prefixlen=gw.network.prefixlen)
        )
        ipr.link("set", index=index, state="up")
        return index


def _create_pod_network(net: PodNetwork) -> PodNetwork:
    prefix = ipaddress.IPv4Interface(net.ip_cidr).network.prefixlen
    bridge_index = _ensure_bridge(net.bridge, ipaddress.IPv4Interface(f"{net.gateway}/{prefix}"))
    if _pod_is_complete(net, bridge_index):
        return net
    _delete_pod_network(net.netns_name)
    try:
        _build_pod(net, bridge_index)
    except BaseException:
        _delete_pod_network(net.netns_name)
        raise
    return net


def _pod_is_complete(net: PodNetwork, bridge_index: int) -> bool:
    if not os.path.exists(net.netns_path):
        return False
    with IPRoute() as ipr:
        index = _lookup(ipr, net.host_ifname)
        if index is None or ipr.link("get", index=index)[0].get("master") != bridge_index:
            return False
    return nsutil.run_in_netns(net.netns_path, _pod_side_is_complete, net)


def _pod_side_is_complete(net: PodNetwork) -> bool:
    want = ipaddress.IPv4Interface(net.ip_cidr)
    with IPRoute() as ns:
        eth = _lookup(ns, POD_IFNAME)
        if eth is None:
            return False
        addrs = {(a.get("address"), a["prefixlen"]) for a in ns.addr("dump", index=eth)}
        gateways = {r.get("gateway") for r in ns.route("dump", family=AF_INET) if r["dst_len"] == 0}
    return (str(want.ip), want.network.prefixlen) in addrs and net.gateway in gateways


def _build_pod(net: PodNetwork, bridge_index: int) -> None:
    nsutil.create_named_netns(net.netns_name)
    fd = os.open(net.netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with IPRoute() as ipr:
            # The peer is born inside the pod netns as eth0: the host never sees a second eth0.
            ipr.link("add", ifname=net.host_ifname, kind="veth", peer={"ifname": POD_IFNAME, "net_ns_fd": fd})
            ipr.link("set", index=_lookup(ipr, net.host_ifname), master=bridge_index, state="up")
    finally:
        os.close(fd)
    nsutil.run_in_netns(net.netns_path, _configure_pod_side, net)


def _configure_pod_side(net: PodNetwork) -> None:
    iface = ipaddress.IPv4Interface(net.ip_cidr)
    with IPRoute() as ns:
        eth = _lookup(ns, POD_IFNAME)
        ns.addr("add", index=eth, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        ns.link("set", index=eth, state="up")
        ns.link("set", index=_lookup(ns, "lo"), state="up")
        ns.route("add", dst="default", gateway=net.gateway)


def _delete_pod_network(netns_name: str) -> bool:
    removed = False
    with IPRoute() as ipr:
        index = _lookup(ipr, host_ifname(netns_name))
        if index is not None:
            # Explicitly: a netns kept alive by a process would otherwise keep the veth too.
            _ignore((errno.ENODEV,), lambda: ipr.link("del", index=index))
            removed = True
    return nsutil.remove_named_netns(netns_name) or removed


def _delete_bridge_if_unused(bridge: str) -> bool:
    with IPRoute() as ipr:
        index = _lookup(ipr, bridge)
        if index is None:
            return False
        if any(link.get("master") == index for link in ipr.link("dump")):
            return False
        _ignore((errno.ENODEV,), lambda: ipr.link("del", index=index))
        return True


def spawn_in_netns(argv: Sequence[str], netns_name: str, **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """Start `argv` (no shell) inside a network namespace; the caller's threads stay where they are.

    The fork happens on a short-lived thread that has entered the netns (a child inherits the
    forking thread's namespaces), so no Python code runs between fork and exec: a `preexec_fn`
    doing setns would, and that can deadlock in a multi-threaded process (subprocess docs).

    Args:
        argv: program and arguments.
        netns_name: a named netns (`/var/run/netns/<name>`) or an absolute netns path.
        **popen_kwargs: passed to `subprocess.Popen` (not `shell`, `preexec_fn`).

    Raises:
        FileNotFoundError: the netns does not exist.
    """
    if isinstance(argv, (str, bytes)) or not argv:
        raise TypeError("argv must be a non-empty list of strings")
    for banned in ("shell", "preexec_fn"):
        if banned in popen_kwargs:
            raise TypeError(f"spawn_in_netns does not accept {banned}=")
    path = netns_name if netns_name.startswith("/") else nsutil.netns_path(netns_name)
    popen: Callable[..., subprocess.Popen[Any]] = subprocess.Popen
    return nsutil.run_in_netns(path, popen, list(argv), **popen_kwargs)
