"""tc messages as bytes: what shaping sends decodes to what was asked (no kernel)."""

from __future__ import annotations

import socket
import struct

import pytest

from chaosbus.common.messages import NetemParams, TbfParams
from chaosbus.injector.backends._glue import tcwire
from chaosbus.injector.backends.tcplan import ROOT, Stage


def encoded(req: tcwire.Request) -> tcwire.TcObject:
    req.msg["header"]["type"] = req.type
    req.msg["header"]["flags"] = req.flags
    req.msg.encode()
    return tcwire.parse(bytes(req.msg.data))


def test_root_is_htb_cb00_with_direct_default() -> None:
    obj = encoded(tcwire.root_qdisc(7))
    assert (obj.what, obj.ifindex, obj.handle, obj.parent, obj.kind) == ("qdisc", 7, ROOT, 0xFFFFFFFF, "htb")
    assert obj.options is not None
    init = tcwire.attrs(obj.options)[2]
    version, r2q, defcls = struct.unpack_from("=3I", init)
    assert (version, defcls) == (3, 0)


def test_class_rate_is_far_above_any_link() -> None:
    obj = encoded(tcwire.add_class(7, ROOT | 5))
    assert (obj.what, obj.handle, obj.parent) == ("class", ROOT | 5, ROOT)
    a = tcwire.attrs(obj.options or b"")
    assert struct.unpack("=Q", a[6])[0] == tcwire.CLASS_RATE and struct.unpack("=Q", a[7])[0] == tcwire.CLASS_RATE


@pytest.mark.parametrize(
    "tbf",
    [
        TbfParams(rate=125_000, limit=20_000, buffer=10_000),
        TbfParams(rate=125_000, limit=20_000, buffer=10_000, peakrate=250_000, minburst=1_600),
        TbfParams(rate=10_000_000_000, limit=1 << 20, buffer=1 << 20),  # above 32 bits: RATE64
    ],
)
def test_tbf_round_trip(tbf: TbfParams) -> None:
    obj = encoded(tcwire.add_stage(3, Stage(0xCB020000, ROOT | 1, "o", tbf=tbf)))
    assert (obj.kind, obj.handle, obj.parent) == ("tbf", 0xCB020000, ROOT | 1)
    got = tcwire.read_tbf(obj.options or b"")
    assert got["rate"] == tbf.rate and got["limit"] == tbf.limit and got["peakrate"] == tbf.peakrate
    assert abs(got["buffer"] - tbf.buffer) <= max(1, tbf.rate * 64 // 10**9 + 1)
    a = tcwire.attrs(obj.options or b"")
    assert struct.unpack("=I", a[6])[0] == tbf.buffer  # TCA_TBF_BURST: the kernel takes bytes as given
    assert (7 in a) == bool(tbf.peakrate)


def test_netem_round_trip_every_field() -> None:
    p = NetemParams(
        latency_ns=100_000_000,
        jitter_ns=10_000_000,
        delay_correlation=25,
        reorder=10,
        reorder_correlation=5,
        gap=3,
        loss=1.5,
        loss_correlation=50,
        duplicate=2,
        duplicate_correlation=1,
        corrupt=0.5,
        corrupt_correlation=2,
        rate=125_000,
    )
    obj = encoded(tcwire.add_stage(3, Stage(0xCB030000, ROOT | 2, "o", netem=p)))
    got = tcwire.read_netem(obj.options or b"")
    for name in ("latency_ns", "jitter_ns", "gap", "rate"):
        assert got[name] == getattr(p, name), name
    for name in (
        "delay_correlation",
        "reorder",
        "reorder_correlation",
        "loss",
        "loss_correlation",
        "duplicate",
        "duplicate_correlation",
        "corrupt",
        "corrupt_correlation",
    ):
        assert got[name] == pytest.approx(getattr(p, name), abs=1e-4), name
    assert got["limit"] == 1000


def test_classifier_carries_the_program_for_every_protocol() -> None:
    prog = struct.pack("=HBBI", 0x06, 0, 0, 0)
    obj = encoded(tcwire.classifier(4, prog))
    assert (obj.what, obj.kind, obj.parent, obj.handle) == ("filter", "bpf", ROOT, tcwire.FILTER_HANDLE)
    assert obj.info == (tcwire.FILTER_PRIO << 16) | socket.htons(tcwire.ETH_P_ALL)
    a = tcwire.attrs(obj.options or b"")
    assert struct.unpack("=H", a[4])[0] == 1 and a[5] == prog


def test_replay_sends_the_dumped_options_back_verbatim() -> None:
    original = encoded(
        tcwire.add_stage(2, Stage(0x50000, 0xFFFFFFFF, "x", tbf=TbfParams(rate=1000, limit=2000, buffer=3000)))
    )
    again = encoded(tcwire.replay(original, 9, replace=True))
    assert again.identity == original.identity and again.ifindex == 9


@pytest.mark.parametrize(("percent", "u32"), [(0, 0), (100, 0xFFFFFFFF), (50, 0x80000000), (150, 0xFFFFFFFF)])
def test_probabilities(percent: float, u32: int) -> None:
    assert tcwire.prob(percent) == u32
