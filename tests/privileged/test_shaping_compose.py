"""Composition on one pod against the real kernel: partition + bandwidth, two shaping experiments
read back from the installed tree, netem delay + loss planned together (read back where the kernel
has netem), recovery in any order, the device's original configuration restored exactly (also a
custom one, also after an injector restart), and concurrent experiments on one pod.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pyroute2 import IPRoute, NetlinkError

from chaosbus.common import netns as nsutil
from chaosbus.common.messages import NetemParams, Partition, PartitionRule, Shaping, TbfParams
from chaosbus.injector import faults
from chaosbus.injector.backends import nft, tc, tcdev
from chaosbus.injector.backends._glue import tcwire
from chaosbus.injector.backends._glue.netnslink import LinkCache
from chaosbus.injector.backends.tcdev import OriginalStore
from chaosbus.injector.backends.tcplan import ROOT, Rule, dest

from .conftest import Lab
from .shaping_kit import Shaped, ctx_for, goodput, identities, shaper, sinks, tree

pytestmark = pytest.mark.privileged

MBIT = 1_000_000


def bw(mbit: float) -> TbfParams:
    return TbfParams(rate=int(mbit * MBIT / 8), limit=40_000, buffer=10_000)


@pytest.fixture(scope="module")
def sink(lab: Lab) -> Iterator[dict[int, subprocess.Popen[str]]]:
    with sinks(lab) as procs:
        yield procs


def ours(netns_path: str) -> list[tcwire.TcObject]:
    return [o for o in tree(netns_path) if o.handle >> 16 in range(0xCB00, 0xCC00) or o.parent == ROOT]


@pytest.mark.parametrize("first", ["partition", "bandwidth"])
def test_partition_and_bandwidth_on_one_pod(lab: Lab, sink: dict[int, subprocess.Popen[str]], first: str) -> None:
    pod = lab.pods[0]
    before = identities(tree(pod.net.netns_path))
    part_spec = Partition(rules=[PartitionRule(chain="output", peers=[lab.pods[3].ip])])
    partition = faults.get("partition")
    part_ctx = ctx_for("cmp-part", pod.server.pid, part_spec)
    band = Shaped(lab, "cmp-bw", 0, Shaping(action="bandwidth", tbf=bw(1), pod_ip=pod.ip, peers=[lab.pods[1].ip]))
    partition.apply(part_ctx, part_spec)
    band.apply()
    try:
        assert lab.reachable() == lab.all_links() - {(0, 3, 8080)}
        assert abs(goodput(lab, sink, 0, 1) - MBIT) < 0.2 * MBIT
        if first == "partition":
            partition.recover(part_ctx, part_spec)
            assert lab.reachable() == lab.all_links()
            assert abs(goodput(lab, sink, 0, 1, seconds=1.5) - MBIT) < 0.2 * MBIT
        else:
            band.recover()
            assert goodput(lab, sink, 0, 1, seconds=1) > 20 * MBIT
            assert lab.reachable() == lab.all_links() - {(0, 3, 8080)}
    finally:
        band.recover()
        partition.recover(part_ctx, part_spec)
    assert identities(tree(pod.net.netns_path)) == before
    assert [t for t in nft.list_tables(pod.net.netns_path) if t.startswith(nft.TABLE_PREFIX)] == []


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_two_bandwidth_experiments_read_back_and_recover_in_any_order(
    lab: Lab, sink: dict[int, subprocess.Popen[str]], order: tuple[str, str]
) -> None:
    pod = lab.pods[1]
    before = identities(tree(pod.net.netns_path))
    exps = {
        "a": Shaped(lab, "two-a", 1, Shaping(action="bandwidth", tbf=bw(1), peers=[lab.pods[2].ip])),
        "b": Shaped(lab, "two-b", 1, Shaping(action="bandwidth", tbf=bw(2), unfiltered=True)),
    }
    for exp in exps.values():
        exp.apply()
    try:
        installed = ours(pod.net.netns_path)
        tbfs = sorted(
            (tcwire.read_tbf(o.options or b"")["rate"], o.parent)
            for o in installed
            if o.kind == "tbf" and o.what == "qdisc"
        )
        # towards pod 2: a's 1 mbit then b's 2 mbit chained in one class; everything else: b alone
        assert [rate * 8 for rate, _ in tbfs] == [MBIT, 2 * MBIT, 2 * MBIT]
        classes = {o.handle for o in installed if o.what == "class" and o.kind == "htb"}
        assert len(classes) == 2
        assert {o.kind for o in installed if o.what == "filter"} == {"bpf"}
        assert abs(goodput(lab, sink, 1, 2) - MBIT) < 0.2 * MBIT
        assert abs(goodput(lab, sink, 1, 3) - 2 * MBIT) < 0.2 * 2 * MBIT
        exps[order[0]].recover()
        remaining = exps[order[1]]
        left = {r.owner for r in shaper().active(pod.net.netns_path)["eth0"].values()}
        assert left == {f"two-{order[1]}/."}
        expect = MBIT if order[1] == "a" else 2 * MBIT
        assert abs(goodput(lab, sink, 1, 2) - expect) < 0.2 * expect
        remaining.recover()
    finally:
        for exp in exps.values():
            exp.recover()
    assert identities(tree(pod.net.netns_path)) == before
    assert shaper().active(pod.net.netns_path) == {}


@pytest.mark.netem
@pytest.mark.parametrize("order", [("delay", "loss"), ("loss", "delay")])
def test_delay_and_loss_planned_together_read_back(lab: Lab, order: tuple[str, str]) -> None:
    reason = tcdev.probe()["netem"]
    if reason is not None:
        print(f"skipping netem read-back: {reason}")
        pytest.skip(reason)
    pod = lab.pods[2]
    before = identities(tree(pod.net.netns_path))
    delay = NetemParams(latency_ns=100_000_000, jitter_ns=10_000_000, delay_correlation=25)
    loss = NetemParams(loss=25.0, loss_correlation=50.0)
    exps = {
        "delay": Shaped(lab, "delay", 2, Shaping(action="delay", netem=delay, peers=[lab.pods[3].ip])),
        "loss": Shaped(lab, "loss", 2, Shaping(action="loss", netem=loss, peers=[lab.pods[3].ip, lab.pods[0].ip])),
    }
    for exp in exps.values():
        exp.apply()
    try:
        netems = [o for o in ours(pod.net.netns_path) if o.what == "qdisc" and o.kind == "netem"]
        read = [tcwire.read_netem(o.options or b"") for o in netems]
        # towards pod 3: delay then loss chained (owners in order); towards pod 0: loss alone
        assert sorted((r["latency_ns"], r["loss"]) for r in read) == [(0, 25.0), (0, 25.0), (100_000_000, 0)]
        [d] = [r for r in read if r["latency_ns"]]
        assert d["jitter_ns"] == 10_000_000 and d["delay_correlation"] == pytest.approx(25, abs=1e-3)
        exps[order[0]].recover()
        # one rule left, so one combination of rules a packet can meet: one class, one netem
        assert len([o for o in ours(pod.net.netns_path) if o.kind == "netem" and o.what == "qdisc"]) == 1
        exps[order[1]].recover()
    finally:
        for exp in exps.values():
            exp.recover()
    assert identities(tree(pod.net.netns_path)) == before


def _custom_root(ifname: str) -> None:
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.tc("add", "htb", index, 0x50000, default=0x10)
        ipr.tc("add-class", "htb", index, 0x50010, parent=0x50000, rate="50mbit", burst=15000)
        ipr.tc("add", "tbf", index, 0x60000, parent=0x50010, rate="40mbit", burst=20000, latency="50ms")
        ipr.tc(
            "add-filter", "u32", index, parent=0x50000, prio=10, protocol=0x0800, target=0x50010, keys=["0x0/0x0+16"]
        )


def _drop_root(ifname: str) -> None:
    with IPRoute() as ipr, contextlib.suppress(NetlinkError):  # already the default: nothing to drop
        ipr.tc("del", index=ipr.link_lookup(ifname=ifname)[0], handle=0x50000, root=True)


@pytest.mark.parametrize("restart", [False, True])
def test_a_custom_original_is_restored_exactly(lab: Lab, restart: bool) -> None:
    pod = lab.pods[3]
    nsutil.run_in_netns(pod.net.netns_path, _custom_root, "eth0")
    try:
        before = identities(tree(pod.net.netns_path))
        assert any(o.kind == "u32" for o in tree(pod.net.netns_path))
        store = OriginalStore(Path(tempfile.mkdtemp()))
        first = tc.Shaper(LinkCache(), store)
        rule = Rule("custom/.", tbf=bw(1), dests=(dest(lab.pods[0].ip),))
        first.set_rule(pod.net.netns_path, "", pod.ip, rule, "t", ())
        assert identities(tree(pod.net.netns_path)) != before
        assert list(store.directory.iterdir())  # a non-default original is kept on disk
        if restart:  # a new process: empty memory, the kernel still holds our tree
            first.links.close_all()
            second = tc.Shaper(LinkCache(), store)
            [outcome] = second.drop_rule(pod.net.netns_path, "custom/.", ())
            second.links.close_all()
        else:
            [outcome] = first.drop_rule(pod.net.netns_path, "custom/.", ())
        assert outcome.note == "" and outcome.plan is None
        assert identities(tree(pod.net.netns_path)) == before
        assert list(store.directory.iterdir()) == []
    finally:
        nsutil.run_in_netns(pod.net.netns_path, _drop_root, "eth0")


def test_restart_reapplying_the_same_rules_rebuilds_the_same_tree(lab: Lab) -> None:
    pod = lab.pods[0]
    before = identities(tree(pod.net.netns_path))
    store = OriginalStore(Path(tempfile.mkdtemp()))
    rules = [Rule("r1/.", tbf=bw(1), dests=(dest(lab.pods[1].ip),)), Rule("r2/.", tbf=bw(3))]
    first = tc.Shaper(LinkCache(), store)
    for r in rules:
        first.set_rule(pod.net.netns_path, "", pod.ip, r, "t", ())
    built = identities(ours(pod.net.netns_path))
    first.links.close_all()
    second = tc.Shaper(LinkCache(), store)  # the injector restarted; the journal re-applies both
    for r in rules:
        second.set_rule(pod.net.netns_path, "", pod.ip, r, "t", ())
    assert identities(ours(pod.net.netns_path)) == built
    for r in rules:
        second.drop_rule(pod.net.netns_path, r.owner, ())
    second.links.close_all()
    assert identities(tree(pod.net.netns_path)) == before


def test_concurrent_experiments_on_one_pod_all_land_and_all_leave(lab: Lab) -> None:
    pod = lab.pods[2]
    before = identities(tree(pod.net.netns_path))
    exps = [
        Shaped(lab, f"conc-{i}", 2, Shaping(action="bandwidth", tbf=bw(1 + i), peers=[lab.pods[i % 2].ip]))
        for i in range(8)
    ]
    with ThreadPoolExecutor(8) as pool:
        assert all("applied" in m for m in pool.map(lambda e: e.apply(), exps))
    assert len(shaper().active(pod.net.netns_path)["eth0"]) == 8
    assert len([o for o in ours(pod.net.netns_path) if o.kind == "tbf" and o.what == "qdisc"]) == 8
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda e: e.recover(), exps))
    assert identities(tree(pod.net.netns_path)) == before
    assert shaper().active(pod.net.netns_path) == {}
