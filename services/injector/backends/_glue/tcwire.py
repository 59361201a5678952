"""Traffic-control netlink messages for shaping, built with pyroute2's message classes, and a small
parser of raw tc dump messages. No I/O here: `backends/tc.py` sends what these functions build.

pyroute2's own tc plugins fall short for what chaosbus needs (its tbf drops peakrate/minburst, its
cls_bpf cannot carry a classic BPF program, its htb class computes rate tables we do not need), so
the option payloads are declared here, field for field as in linux/pkt_sched.h and pkt_cls.h.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, nla, nlmsg
from pyroute2.netlink.rtnl import (
    RTM_DELQDISC,
    RTM_DELTCLASS,
    RTM_NEWQDISC,
    RTM_NEWTCLASS,
    RTM_NEWTFILTER,
    TC_H_ROOT,
)

from chaosbus.common.messages import NetemParams, TbfParams
from chaosbus.injector.backends._glue import nlattr
from chaosbus.injector.backends.tcplan import ROOT, Stage

CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
DELETE = NLM_F_REQUEST | NLM_F_ACK
ETH_P_ALL = 0x0003
FILTER_HANDLE, FILTER_PRIO = 1, 1
CLASS_RATE = 100_000_000_000 // 8  # bytes/s: far above any link, so a class never throttles
CLASS_BURST = 256 * 1024
U32 = 0xFFFFFFFF
TCA_KIND, TCA_OPTIONS = 1, 2
_RATESPEC = (("cell_log", "B"), ("linklayer", "B"), ("overhead", "H"), ("cell_align", "h"), ("mpu", "H"), ("rate", "I"))


def _ratespec(prefix: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}_{name}", fmt) for name, fmt in _RATESPEC)


class HtbOptions(nla):  # type: ignore[misc]
    nla_map = (
        ("TCA_HTB_UNSPEC", "none"),
        ("TCA_HTB_PARMS", "parms"),
        ("TCA_HTB_INIT", "glob"),
        ("TCA_HTB_CTAB", "none"),
        ("TCA_HTB_RTAB", "none"),
        ("TCA_HTB_DIRECT_QLEN", "uint32"),
        ("TCA_HTB_RATE64", "uint64"),
        ("TCA_HTB_CEIL64", "uint64"),
    )

    class glob(nla):  # type: ignore[misc]
        fields = (("version", "I"), ("rate2quantum", "I"), ("defcls", "I"), ("debug", "I"), ("direct_pkts", "I"))

    class parms(nla):  # type: ignore[misc]
        fields = (
            *_ratespec("rate"),
            *_ratespec("ceil"),
            ("buffer", "I"),
            ("cbuffer", "I"),
            ("quantum", "I"),
            ("level", "I"),
            ("prio", "I"),
        )


class TbfOptions(nla):  # type: ignore[misc]
    nla_map = (
        ("TCA_TBF_UNSPEC", "none"),
        ("TCA_TBF_PARMS", "parms"),
        ("TCA_TBF_RTAB", "none"),
        ("TCA_TBF_PTAB", "none"),
        ("TCA_TBF_RATE64", "uint64"),
        ("TCA_TBF_PRATE64", "uint64"),
        ("TCA_TBF_BURST", "uint32"),
        ("TCA_TBF_PBURST", "uint32"),
    )

    class parms(nla):  # type: ignore[misc]
        fields = (*_ratespec("rate"), *_ratespec("peak"), ("limit", "I"), ("buffer", "I"), ("mtu", "I"))


class NetemOptions(nla):  # type: ignore[misc]
    """struct tc_netem_qopt followed by attributes (the "compat" layout netem uses)."""

    fields = (("latency", "I"), ("limit", "I"), ("loss", "I"), ("gap", "I"), ("duplicate", "I"), ("jitter", "I"))
    nla_map = (
        ("TCA_NETEM_UNSPEC", "none"),
        ("TCA_NETEM_CORR", "corr"),
        ("TCA_NETEM_DELAY_DIST", "none"),
        ("TCA_NETEM_REORDER", "prob"),
        ("TCA_NETEM_CORRUPT", "prob"),
        ("TCA_NETEM_LOSS", "none"),
        ("TCA_NETEM_RATE", "rate"),
        ("TCA_NETEM_ECN", "uint32"),
        ("TCA_NETEM_RATE64", "uint64"),
        ("TCA_NETEM_PAD", "none"),
        ("TCA_NETEM_LATENCY64", "int64"),
        ("TCA_NETEM_JITTER64", "int64"),
    )

    class corr(nla):  # type: ignore[misc]
        fields = (("delay_corr", "I"), ("loss_corr", "I"), ("dup_corr", "I"))

    class prob(nla):  # type: ignore[misc]
        fields = (("probability", "I"), ("correlation", "I"))

    class rate(nla):  # type: ignore[misc]
        fields = (("rate", "I"), ("packet_overhead", "i"), ("cell_size", "I"), ("cell_overhead", "i"))


class BpfOptions(nla):  # type: ignore[misc]
    nla_map = (
        ("TCA_BPF_UNSPEC", "none"),
        ("TCA_BPF_ACT", "none"),
        ("TCA_BPF_POLICE", "none"),
        ("TCA_BPF_CLASSID", "uint32"),
        ("TCA_BPF_OPS_LEN", "uint16"),
        ("TCA_BPF_OPS", "cdata"),
    )


class TcRequest(nlmsg):  # type: ignore[misc]
    """A tcmsg whose TCA_OPTIONS layout is chosen by the subclass, not by pyroute2's plugin table."""

    prefix = "TCA_"
    fields = (
        ("family", "B"),
        ("pad1", "B"),
        ("pad2", "H"),
        ("index", "i"),
        ("handle", "I"),
        ("parent", "I"),
        ("info", "I"),
    )
    nla_map = (("TCA_UNSPEC", "none"), ("TCA_KIND", "asciiz"), ("TCA_OPTIONS", "get_options"))
    options: type[nla] | None = None

    @staticmethod
    def get_options(self: TcRequest, *argv: object, **kwarg: object) -> type[nla] | None:
        return type(self).options


class HtbMsg(TcRequest):
    options = HtbOptions


class TbfMsg(TcRequest):
    options = TbfOptions


class NetemMsg(TcRequest):
    options = NetemOptions


class BpfMsg(TcRequest):
    options = BpfOptions


class RawMsg(TcRequest):
    options = nla.cdata  # a replayed dump: TCA_OPTIONS exactly as the kernel reported it


@dataclass(frozen=True)
class Request:
    """One netlink request: the message, its type and flags."""

    msg: nlmsg
    type: int
    flags: int


def _msg(
    cls: type[TcRequest],
    ifindex: int,
    handle: int,
    parent: int,
    kind: str | None = None,
    options: Mapping[str, Any] | None = None,
    info: int = 0,
) -> TcRequest:
    msg = cls()
    msg["index"], msg["handle"], msg["parent"], msg["info"] = ifindex, handle, parent, info
    attrs: list[list[object]] = []
    if kind is not None:
        attrs.append(["TCA_KIND", kind])
    if options is not None:
        attrs.append(["TCA_OPTIONS", options])
    msg["attrs"] = attrs
    return msg


def root_qdisc(ifindex: int) -> Request:
    """htb cb00: as the root, replacing whatever root there is; unclassified packets go direct."""
    opts = {"attrs": [["TCA_HTB_INIT", {"version": 3, "rate2quantum": 10, "defcls": 0, "debug": 0, "direct_pkts": 0}]]}
    return Request(_msg(HtbMsg, ifindex, ROOT, TC_H_ROOT, "htb", opts), RTM_NEWQDISC, REPLACE)


def delete_root(ifindex: int) -> Request:
    return Request(_msg(TcRequest, ifindex, 0, TC_H_ROOT), RTM_DELQDISC, DELETE)


def add_class(ifindex: int, classid: int) -> Request:
    ticks = _ticks(CLASS_BURST * 1_000_000_000 // CLASS_RATE)
    spec = {
        **_rate("rate", U32),
        **_rate("ceil", U32),
        "buffer": ticks,
        "cbuffer": ticks,
        "quantum": 60000,
        "level": 0,
        "prio": 0,
    }
    opts = {"attrs": [["TCA_HTB_PARMS", spec], ["TCA_HTB_RATE64", CLASS_RATE], ["TCA_HTB_CEIL64", CLASS_RATE]]}
    return Request(_msg(HtbMsg, ifindex, classid, ROOT, "htb", opts), RTM_NEWTCLASS, CREATE)


def delete_class(ifindex: int, classid: int) -> Request:
    return Request(_msg(TcRequest, ifindex, classid, ROOT), RTM_DELTCLASS, DELETE)


def add_stage(ifindex: int, stage: Stage) -> Request:
    if stage.netem is not None:
        return Request(
            _msg(NetemMsg, ifindex, stage.handle, stage.parent, "netem", netem_options(stage.netem)),
            RTM_NEWQDISC,
            CREATE,
        )
    assert stage.tbf is not None
    return Request(
        _msg(TbfMsg, ifindex, stage.handle, stage.parent, "tbf", tbf_options(stage.tbf)), RTM_NEWQDISC, CREATE
    )


def classifier(ifindex: int, program: bytes) -> Request:
    """The cls_bpf filter on cb00:, all protocols, created or replaced in place (atomic swap)."""
    opts = {"attrs": [["TCA_BPF_OPS_LEN", len(program) // 8], ["TCA_BPF_OPS", program]]}
    info = (FILTER_PRIO << 16) | socket.htons(ETH_P_ALL)
    return Request(_msg(BpfMsg, ifindex, FILTER_HANDLE, ROOT, "bpf", opts, info), RTM_NEWTFILTER, REPLACE)


def replay(obj: TcObject, ifindex: int, *, replace: bool) -> Request:
    """A dumped object sent back as a create request (for restoring an original configuration)."""
    kind_type = {"qdisc": RTM_NEWQDISC, "class": RTM_NEWTCLASS, "filter": RTM_NEWTFILTER}[obj.what]
    msg = _msg(RawMsg, ifindex, obj.handle, obj.parent, obj.kind, None, obj.info if obj.what == "filter" else 0)
    if obj.options is not None:
        msg["attrs"].append(["TCA_OPTIONS", _replayable(obj)])
    return Request(msg, kind_type, REPLACE if replace else CREATE)


# Attributes a dump reports otherwise than a request must carry them: htb's TCA_HTB_INIT (2) holds
# the full version 0x30011 but only the major (3) is accepted; classifiers' flags (u32 11, bpf 9,
# matchall 3) carry the status bits IN_HW/NOT_IN_HW (0x4, 0x8) that a request may not set.
def _major(v: int) -> int:
    return v >> 16


def _no_hw_status(v: int) -> int:
    return v & ~0xC


_FIXUPS: dict[tuple[str, str], tuple[int, Callable[[int], int]]] = {
    ("qdisc", "htb"): (2, _major),
    ("filter", "u32"): (11, _no_hw_status),
    ("filter", "bpf"): (9, _no_hw_status),
    ("filter", "matchall"): (3, _no_hw_status),
}


def _replayable(obj: TcObject) -> bytes:
    """The dumped options, fixed up where a request must differ from a dump (see _FIXUPS)."""
    options = obj.options or b""
    fix = _FIXUPS.get((obj.what, obj.kind))
    if fix is None:
        return options
    wanted, change = fix
    pos = 0
    while pos + 8 <= len(options):
        alen, atype = struct.unpack_from("=HH", options, pos)
        if alen < 4:
            break
        if atype & 0x3FFF == wanted and alen >= 8:
            value = change(struct.unpack_from("=I", options, pos + 4)[0])
            options = options[: pos + 4] + struct.pack("=I", value) + options[pos + 8 :]
        pos += (alen + 3) & ~3
    return options


# --- parameter encoding -------------------------------------------------------------------------


def tbf_options(p: TbfParams) -> dict[str, object]:
    parms: dict[str, object] = {
        **_rate("rate", p.rate),
        **_rate("peak", p.peakrate if p.minburst else 0),
        "limit": p.limit,
        "buffer": _ticks(p.buffer * 1_000_000_000 // max(p.rate, 1)),
        "mtu": 0,
    }
    attrs: list[list[object]] = [["TCA_TBF_PARMS", parms], ["TCA_TBF_BURST", p.buffer]]
    if p.rate > U32:
        attrs.append(["TCA_TBF_RATE64", p.rate])
    if p.peakrate and p.minburst:
        parms["mtu"] = _ticks(p.minburst * 1_000_000_000 // p.peakrate)
        attrs.append(["TCA_TBF_PBURST", p.minburst])
        if p.peakrate > U32:
            attrs.append(["TCA_TBF_PRATE64", p.peakrate])
    return {"attrs": attrs}


def netem_options(p: NetemParams) -> dict[str, object]:
    out: dict[str, object] = {
        "latency": _ticks(p.latency_ns),
        "jitter": _ticks(p.jitter_ns),
        "limit": 1000,
        "loss": prob(p.loss),
        "duplicate": prob(p.duplicate),
        "gap": p.gap,
    }
    attrs: list[list[object]] = []
    if p.delay_correlation or p.loss_correlation or p.duplicate_correlation:
        attrs.append(
            [
                "TCA_NETEM_CORR",
                {
                    "delay_corr": prob(p.delay_correlation),
                    "loss_corr": prob(p.loss_correlation),
                    "dup_corr": prob(p.duplicate_correlation),
                },
            ]
        )
    if p.reorder:
        attrs.append(
            ["TCA_NETEM_REORDER", {"probability": prob(p.reorder), "correlation": prob(p.reorder_correlation)}]
        )
    if p.corrupt:
        attrs.append(
            ["TCA_NETEM_CORRUPT", {"probability": prob(p.corrupt), "correlation": prob(p.corrupt_correlation)}]
        )
    if p.rate:
        attrs.append(
            ["TCA_NETEM_RATE", {"rate": min(p.rate, U32), "packet_overhead": 0, "cell_size": 0, "cell_overhead": 0}]
        )
        if p.rate > U32:
            attrs.append(["TCA_NETEM_RATE64", p.rate])
    if p.latency_ns or p.jitter_ns:
        attrs += [["TCA_NETEM_LATENCY64", p.latency_ns], ["TCA_NETEM_JITTER64", p.jitter_ns]]
    out["attrs"] = attrs
    return out


def prob(percent: float) -> int:
    """A percentage as netem's u32 probability (100 % = 2^32 - 1), as tc computes it."""
    return min(U32, max(0, round(percent / 100 * U32)))


def _rate(prefix: str, rate: int) -> dict[str, int]:
    # linklayer ethernet (1): the kernel then needs no rate table, as with modern tc.
    return {
        f"{prefix}_cell_log": 0,
        f"{prefix}_linklayer": 1 if rate else 0,
        f"{prefix}_overhead": 0,
        f"{prefix}_cell_align": -1 if rate else 0,
        f"{prefix}_mpu": 0,
        f"{prefix}_rate": min(rate, U32),
    }


def _ticks(ns: int) -> int:
    """Nanoseconds as psched ticks (64 ns), as the legacy u32 fields carry them."""
    return min(U32, ns >> 6)


# --- parsing raw dumps --------------------------------------------------------------------------


@dataclass(frozen=True)
class TcObject:
    """One qdisc, class or filter as the kernel dumped it (raw bytes kept for an exact replay)."""

    what: str  # qdisc | class | filter
    ifindex: int
    handle: int
    parent: int
    info: int
    kind: str
    options: bytes | None

    @property
    def identity(self) -> tuple[str, int, int, int, str, bytes | None]:
        """What "the same configuration" compares: everything but statistics."""
        return (self.what, self.handle, self.parent, self.info, self.kind, self.options)


_WHAT = {RTM_NEWQDISC: "qdisc", RTM_NEWTCLASS: "class", RTM_NEWTFILTER: "filter"}


def parse(raw: bytes) -> TcObject:
    """Parse one raw RTM_NEW{QDISC,TCLASS,TFILTER} message (netlink header included)."""
    length, msgtype = struct.unpack_from("=IH", raw)
    _, _, _, ifindex, handle, parent, info = struct.unpack_from("=BBHiIII", raw, 16)
    kind, options = "", None
    pos = 36
    while pos + 4 <= length:
        alen, atype = struct.unpack_from("=HH", raw, pos)
        if alen < 4:
            break
        payload = raw[pos + 4 : pos + alen]
        if atype & 0x3FFF == TCA_KIND:
            kind = payload.rstrip(b"\0").decode()
        elif atype & 0x3FFF == TCA_OPTIONS:
            options = payload
        pos += (alen + 3) & ~3
    return TcObject(_WHAT.get(msgtype, str(msgtype)), ifindex, handle, parent, info, kind, options)


RTM_GETQDISC, NLM_F_DUMP, NLMSG_ERROR, NLMSG_DONE = 38, 0x300, 0x2, 0x3
DUMP_TIMEOUT_S = 5.0


def dump_qdiscs_here() -> list[TcObject]:
    """Every qdisc of every device in the calling thread's netns: one RTM_GETQDISC dump on a bare
    rtnetlink socket (about 0.1 ms; pyroute2's per-device dumps over a netns thread cost ~2 ms).

    Raises:
        OSError: the kernel refused the dump, or did not answer within DUMP_TIMEOUT_S.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.settimeout(DUMP_TIMEOUT_S)
        sock.bind((0, 0))
        seq = int.from_bytes(os.urandom(4), "big")
        tcmsg = struct.pack("=BBHiIII", socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0)
        sock.send(struct.pack("=IHHII", 16 + len(tcmsg), RTM_GETQDISC, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + tcmsg)
        found: list[TcObject] = []
        while True:
            reply, pos = sock.recv(1 << 16), 0
            while pos + 16 <= len(reply):
                length, msgtype, _, got, _ = struct.unpack_from("=IHHII", reply, pos)
                if length < 16:
                    break
                if got == seq:
                    if msgtype == NLMSG_DONE:
                        return found
                    if msgtype == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", reply, pos + 16)[0]
                        raise OSError(code, f"qdisc dump refused: {os.strerror(code)}")
                    if msgtype == RTM_NEWQDISC:
                        found.append(parse(reply[pos : pos + length]))
                pos += (length + 3) & ~3
    finally:
        sock.close()


def attrs(payload: bytes, start: int = 0) -> dict[int, bytes]:
    """Top-level attributes of an options payload (type -> payload), from byte `start`."""
    return nlattr.attributes(payload, start)


def read_tbf(options: bytes) -> dict[str, int]:
    """A dumped tbf's parameters: rate/peakrate in bytes/s, limit in bytes, buffer/minburst in bytes
    (the kernel reports them as times; converted back, so within a byte or so of what was set).
    """
    a = attrs(options)
    fields = struct.unpack_from("=BBHhHI BBHhHI III", a[1])
    rate, peak, limit, buffer_ticks, mtu_ticks = fields[5], fields[11], fields[12], fields[13], fields[14]
    rate = max(rate, *(struct.unpack("=Q", a[4]) if 4 in a else (0,)))
    peak = max(peak, *(struct.unpack("=Q", a[5]) if 5 in a else (0,)))
    return {
        "rate": rate,
        "peakrate": peak,
        "limit": limit,
        "buffer": round(buffer_ticks * 64 * rate / 1e9),
        "minburst": round(mtu_ticks * 64 * peak / 1e9),
    }


def read_netem(options: bytes) -> dict[str, float]:
    """A dumped netem's parameters in NetemParams' units (ns, percent, bytes/s)."""
    latency, limit, loss, gap, duplicate, jitter = struct.unpack_from("=6I", options)
    a = attrs(options, 24)
    out: dict[str, float] = {
        "limit": limit,
        "gap": gap,
        "loss": _pct(loss),
        "duplicate": _pct(duplicate),
        "latency_ns": latency * 64,
        "jitter_ns": jitter * 64,
    }
    if 10 in a:
        out["latency_ns"] = struct.unpack("=q", a[10])[0]
    if 11 in a:
        out["jitter_ns"] = struct.unpack("=q", a[11])[0]
    if 1 in a:
        d, lo, du = struct.unpack("=3I", a[1])
        out |= {"delay_correlation": _pct(d), "loss_correlation": _pct(lo), "duplicate_correlation": _pct(du)}
    for attr, name in ((3, "reorder"), (4, "corrupt")):
        if attr in a:
            p, c = struct.unpack("=2I", a[attr])
            out |= {name: _pct(p), f"{name}_correlation": _pct(c)}
    if 6 in a:
        out["rate"] = struct.unpack_from("=I", a[6])[0]
    return out


def _pct(u32: int) -> float:
    return round(u32 / U32 * 100, 4)
