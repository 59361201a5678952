"""Netlink primitives on one device of one namespace, as coroutines for a `NetnsLink` thread:
find the device that carries a pod's address, send requests, read the device's tc objects, keep
and restore its ORIGINAL configuration, and probe which tc kinds the kernel has.

The original configuration is read before chaosbus first touches a device. A root the kernel made
(handle 0: noqueue on a veth, pfifo_fast, mq...) comes back by itself when our root is deleted;
anything else (a root somebody configured, its classes and filters) is replayed from the raw dump,
and kept in a small file as well, so an injector restarted mid-experiment can still restore it.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import json
import os
import socket
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import AsyncIPRoute, NetlinkError
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_GETQDISC, RTM_NEWQDISC, RTM_NEWTFILTER, TC_H_ROOT

from chaosbus.injector.backends._glue import tcwire
from chaosbus.injector.backends._glue.tcwire import Request, TcObject
from chaosbus.injector.backends.tcplan import ROOT

INGRESS_PARENT = 0xFFFFFFF1  # ingress / clsact: not part of the egress tree
_IGNORED_ON_DELETE = (errno.ENOENT, errno.EINVAL, errno.ENODEV)
CLONE_NEWNET = 0x40000000
SIOCGIFADDR = 0x8915


class TcError(Exception):
    """The kernel refused a traffic-control request."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class DeviceMissing(TcError):
    """No such interface in the namespace, or no way to tell which one carries the pod's traffic."""


async def collect(aw: Awaitable[AsyncIterator[Any]]) -> list[Any]:
    return [x async for x in await aw]


async def send(ipr: Any, req: Request, *, missing_ok: bool = False) -> None:
    """Send one request and wait for its acknowledgement.

    Raises:
        TcError: the kernel refused it (with errno and, when given, the kernel's message).
    """
    try:
        async for _ in await ipr.nlm_request(req.msg, req.type, req.flags):
            pass
    except NetlinkError as e:
        if missing_ok and e.code in _IGNORED_ON_DELETE:
            return
        what = f"{req.msg.get_attr('TCA_KIND') or 'delete'} {req.msg['handle'] >> 16:x}:{req.msg['handle'] & 0xFFFF:x}"
        raise TcError(f"netlink refused {what}: {e.args[1] if len(e.args) > 1 else e} (errno {e.code})", e.code) from e


def find_device(name: str, pod_ip: str) -> tuple[int, str]:
    """(ifindex, name) of `name`, else of the interface holding `pod_ip`, else of the default route,
    else of the only non-loopback interface with an IPv4 address. Runs on the namespace's thread
    (plain ioctls and /proc/thread-self: a netlink dump costs a millisecond here).

    Raises:
        DeviceMissing: none of those applies.
    """
    names = dict(socket.if_nameindex())
    if name:
        for index, ifname in names.items():
            if ifname == name:
                return index, ifname
        raise DeviceMissing(
            f"device {name!r} not found in the pod's network namespace (it has {', '.join(sorted(names.values()))})"
        )
    addrs = {index: _ipv4_of(ifname) for index, ifname in names.items() if ifname != "lo"}
    for index, address in addrs.items():
        if pod_ip and address == pod_ip:
            return index, names[index]
    by_name = {ifname: index for index, ifname in names.items()}
    gateway_dev = _default_route_device()
    if gateway_dev in by_name:
        return by_name[gateway_dev], gateway_dev
    candidates = sorted(index for index, address in addrs.items() if address)
    if len(candidates) == 1:
        return candidates[0], names[candidates[0]]
    raise DeviceMissing("cannot tell which interface carries the pod's traffic; set spec.device")


def _ipv4_of(ifname: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", ifname.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(raw[20:24])


def _default_route_device() -> str | None:
    try:
        lines = Path("/proc/thread-self/net/route").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
            return fields[0]
    return None


async def dump(ipr: Any, ifindex: int, *, full: bool = True) -> list[TcObject]:
    """Every qdisc, class and filter of the device, as the kernel reports them. Not `full`: only
    the qdiscs when the root is the kernel's default (which has nothing else worth reading).
    """
    qdiscs = await qdiscs_of(ipr, ifindex)
    root = root_of(qdiscs)
    if not full and (root is None or root.handle == 0):
        return qdiscs
    classes = [_raw(m) for m in await collect(ipr.get_classes(index=ifindex))]
    filters: list[TcObject] = []
    for parent in [q.handle for q in qdiscs] + [c.handle for c in classes]:
        if parent:
            filters += [_raw(m) for m in await collect(ipr.get_filters(index=ifindex, parent=parent))]
    return qdiscs + classes + [f for f in filters if f.kind]


async def root_is(ipr: Any, ifindex: int, handle: int) -> bool:
    """Whether the device's root qdisc has `handle` (one small request, no dump)."""
    msg = tcwire._msg(tcwire.TcRequest, ifindex, handle, TC_H_ROOT)
    try:
        async for _ in await ipr.nlm_request(msg, RTM_GETQDISC, NLM_F_REQUEST | NLM_F_ACK):
            pass
    except NetlinkError:
        return False
    return True


async def qdiscs_of(ipr: Any, ifindex: int) -> list[TcObject]:
    return [q for q in (_raw(m) for m in await collect(ipr.get_qdiscs(index=ifindex))) if q.ifindex == ifindex]


def root_of(objects: Iterable[TcObject]) -> TcObject | None:
    return next((o for o in objects if o.what == "qdisc" and o.parent == TC_H_ROOT), None)


@dataclass(frozen=True)
class Original:
    """A device's egress configuration before chaosbus touched it."""

    root_kind: str
    objects: tuple[TcObject, ...] = ()  # empty: the kernel's default root, which comes back by itself

    @property
    def default(self) -> bool:
        return not self.objects


def original_of(objects: list[TcObject]) -> Original:
    root = root_of(objects)
    if root is None or root.handle == 0:
        return Original(root.kind if root else "")
    egress = [o for o in objects if not _on_ingress(o, objects)]
    return Original(root.kind, tuple(egress))


def _on_ingress(obj: TcObject, objects: list[TcObject]) -> bool:
    ingress = {o.handle for o in objects if o.what == "qdisc" and o.parent == INGRESS_PARENT}
    return (obj.what == "qdisc" and obj.parent == INGRESS_PARENT) or (obj.parent & 0xFFFF0000) in ingress


async def restore(ipr: Any, ifindex: int, original: Original) -> list[str]:
    """Put the original egress configuration back; returns what differs from it afterwards (empty:
    exactly restored). A default root needs no check: deleting ours makes the kernel attach it.
    """
    await send(ipr, tcwire.delete_root(ifindex), missing_ok=True)
    if original.default:
        return []
    created = {0, TC_H_ROOT}
    pending = list(original.objects)
    while pending:  # parents before children; a dump lists them in no useful order
        ready = [o for o in pending if o.parent in created or (o.parent & 0xFFFF0000) in created]
        if not ready:
            break
        for obj in ready:
            replace = obj.what == "qdisc" and obj.parent == TC_H_ROOT
            try:
                await send(ipr, tcwire.replay(obj, ifindex, replace=replace))
            except TcError as e:
                if e.code not in (errno.EEXIST, errno.EOPNOTSUPP):
                    raise
            created.add(obj.handle)
            pending.remove(obj)
    after = await dump(ipr, ifindex)
    return differences(original, after)


def differences(original: Original, now: list[TcObject]) -> list[str]:
    root = root_of(now)
    if original.default:
        kind = root.kind if root else ""
        ok = root is None or (root.handle == 0 and kind == (original.root_kind or kind))
        return (
            []
            if ok
            else [
                f"root is {kind} {root.handle >> 16:x}: instead of the default {original.root_kind}"
                if root
                else "no root"
            ]
        )
    want = {o.identity for o in original.objects}
    have = {o.identity for o in now if not _on_ingress(o, now)}
    return [f"missing {w[0]} {w[4]} {w[1] >> 16:x}:{w[1] & 0xFFFF:x}" for w in sorted(want - have)] + [
        f"extra {h[0]} {h[4]} {h[1] >> 16:x}:{h[1] & 0xFFFF:x}" for h in sorted(have - want)
    ]


def _raw(msg: Any) -> TcObject:
    return tcwire.parse(bytes(msg.data[msg.offset : msg.offset + msg["header"]["length"]]))


# --- keeping originals across an injector restart ------------------------------------------------


class OriginalStore:
    """Non-default originals as JSON files, one per (netns, device); tmpfs is fine (a reboot resets
    every device anyway). Default originals need no file: no file means the kernel's default.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: tuple[int, int], ifname: str) -> Path:
        return self.directory / f"{key[0]:x}-{key[1]}-{ifname}.json"

    def save(self, key: tuple[int, int], ifname: str, original: Original) -> None:
        if original.default:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        objs = [
            {
                "what": o.what,
                "handle": o.handle,
                "parent": o.parent,
                "info": o.info,
                "kind": o.kind,
                "options": o.options.hex() if o.options is not None else None,
            }
            for o in original.objects
        ]
        tmp = self._path(key, ifname).with_suffix(".tmp")
        tmp.write_text(json.dumps({"root_kind": original.root_kind, "objects": objs}))
        os.replace(tmp, self._path(key, ifname))

    def load(self, key: tuple[int, int], ifname: str) -> Original | None:
        try:
            data = json.loads(self._path(key, ifname).read_text())
        except (OSError, ValueError):
            return None
        objs = tuple(
            TcObject(
                o["what"],
                0,
                o["handle"],
                o["parent"],
                o["info"],
                o["kind"],
                bytes.fromhex(o["options"]) if o["options"] is not None else None,
            )
            for o in data["objects"]
        )
        return Original(data["root_kind"], objs)

    def drop(self, key: tuple[int, int], ifname: str) -> None:
        self._path(key, ifname).unlink(missing_ok=True)


# --- capability probe ----------------------------------------------------------------------------

QDISCS = {"netem": "sch_netem", "tbf": "sch_tbf", "htb": "sch_htb", "prio": "sch_prio"}
CLASSIFIERS = {"u32": "cls_u32", "bpf": "cls_bpf"}


def probe() -> dict[str, str | None]:
    """For each tc kind chaosbus may use: None if the kernel has it, else why not. Runs in a scratch
    network namespace (a thread that unshared one), so nothing on the node is touched.
    """
    out: dict[str, dict[str, str | None]] = {}

    def body() -> None:
        try:
            if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            out["r"] = asyncio.run(_probe_here())
        except OSError as e:
            out["r"] = {k: f"cannot probe tc: {e}" for k in (*QDISCS, *CLASSIFIERS)}

    worker = threading.Thread(target=body, name="tc-probe", daemon=True)
    worker.start()
    worker.join()
    return out["r"]


async def _probe_here() -> dict[str, str | None]:
    ipr = AsyncIPRoute()
    try:
        await ipr.setup_endpoint()
        result: dict[str, str | None] = {}
        for kind, module in QDISCS.items():
            result[kind] = await _try(ipr, RTM_NEWQDISC, ROOT, TC_H_ROOT, kind, module)
            await send(ipr, tcwire.delete_root(1), missing_ok=True)
        if result["htb"] is not None:  # classifiers need a classful parent to be tried on
            return result | {kind: f"cannot probe {module} without sch_htb" for kind, module in CLASSIFIERS.items()}
        await send(ipr, tcwire.root_qdisc(1))
        for prio, (kind, module) in enumerate(CLASSIFIERS.items(), start=1):
            result[kind] = await _try(ipr, RTM_NEWTFILTER, 0, ROOT, kind, module, info=(prio << 16) | 0x0300)
        return result
    finally:
        ipr.close()


async def _try(ipr: Any, msgtype: int, handle: int, parent: int, kind: str, module: str, info: int = 0) -> str | None:
    # Without options every kind that exists answers EINVAL (or accepts); an unknown one, ENOENT.
    msg = tcwire._msg(tcwire.TcRequest, 1, handle, parent, kind, None, info)
    try:
        await send(ipr, Request(msg, msgtype, tcwire.CREATE))
    except TcError as e:
        if e.code == errno.ENOENT:
            return f"kernel lacks {module}"
    return None
