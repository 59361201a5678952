"""Shaping against the real kernel: tbf caps real TCP transfers between process pods, only towards
the selected peers, never for exempt control traffic, and not at all after recovery; what this
kernel lacks is refused per target before anything is touched.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from chaosbus.common.messages import NetemParams, Partition, PartitionRule, Shaping, TbfParams
from chaosbus.injector import faults
from chaosbus.injector.backends import exemptions, tc, tcdev
from chaosbus.injector.backends._glue.netnslink import LinkCache, netns_key
from chaosbus.injector.faults import FaultError

from .conftest import PORTS, Lab
from .shaping_kit import SINK_PORTS, Shaped, ctx_for, goodput, identities, shaper, sinks, tree

pytestmark = pytest.mark.privileged

MBIT = 1_000_000
ONE_MBIT = TbfParams(rate=MBIT // 8, limit=20_000, buffer=10_000)


@pytest.fixture(scope="module")
def sink(lab: Lab) -> Iterator[dict[int, subprocess.Popen[str]]]:
    with sinks(lab) as procs:
        yield procs


@pytest.fixture
def started(lab: Lab) -> Iterator[list[Shaped]]:
    """Experiments a test starts: recovered at the end whatever happened, then checked clean."""
    before = {p.index: identities(tree(p.net.netns_path)) for p in lab.pods}
    out: list[Shaped] = []
    yield out
    for exp in out:
        exp.recover()
    for p in lab.pods:
        assert identities(tree(p.net.netns_path)) == before[p.index], f"pod {p.index} was not restored"
        assert shaper().active(p.net.netns_path) == {}


def start(started: list[Shaped], exp: Shaped) -> Shaped:
    started.append(exp)
    exp.apply()
    return exp


def within(measured: float, limit: float, tolerance: float = 0.2) -> bool:
    return abs(measured - limit) <= tolerance * limit


def test_one_mbit_caps_only_the_target_and_recovery_lifts_it(
    lab: Lab, sink: dict[int, subprocess.Popen[str]], started: list[Shaped]
) -> None:
    exp = start(
        started,
        Shaped(
            lab,
            "bw-target",
            0,
            Shaping(action="bandwidth", tbf=ONE_MBIT, pod_ip=lab.pods[0].ip, peers=[lab.pods[1].ip]),
        ),
    )
    capped = goodput(lab, sink, 0, 1)
    other = goodput(lab, sink, 0, 2, seconds=1)
    back = goodput(lab, sink, 1, 0, seconds=1)  # the target's own egress is untouched
    print(
        f"\n1 mbit tbf: to target {capped / MBIT:.3f} Mbit/s, to another pod {other / MBIT:.0f} Mbit/s, "
        f"target back {back / MBIT:.0f} Mbit/s"
    )
    assert within(capped, MBIT), f"{capped / MBIT:.3f} Mbit/s is not within 20% of 1 Mbit/s"
    assert other > 20 * MBIT and back > 20 * MBIT
    assert "bandwidth recovered" in exp.recover()
    assert goodput(lab, sink, 0, 1, seconds=1) > 20 * MBIT


def test_unfiltered_caps_everything_but_exempt_control_traffic(
    lab: Lab, sink: dict[int, subprocess.Popen[str]], started: list[Shaped], monkeypatch: pytest.MonkeyPatch
) -> None:
    # pod 3 plays the NATS server: its port SINK_PORTS[1] must stay fast, in both directions
    monkeypatch.setenv(exemptions.ENV, f"{lab.pods[3].ip}:{SINK_PORTS[1]}")
    start(
        started,
        Shaped(lab, "bw-all", 0, Shaping(action="bandwidth", tbf=ONE_MBIT, pod_ip=lab.pods[0].ip, unfiltered=True)),
    )
    start(
        started,
        Shaped(lab, "bw-nats", 3, Shaping(action="bandwidth", tbf=ONE_MBIT, pod_ip=lab.pods[3].ip, unfiltered=True)),
    )
    exempt = goodput(lab, sink, 0, 3, port=SINK_PORTS[1], seconds=1)
    shaped = goodput(lab, sink, 0, 3, port=SINK_PORTS[0])
    print(f"\nunfiltered 1 mbit: exempt port {exempt / MBIT:.0f} Mbit/s, other port {shaped / MBIT:.3f} Mbit/s")
    assert exempt > 20 * MBIT and within(shaped, MBIT)


def test_external_with_port_caps_only_that_port(
    lab: Lab, sink: dict[int, subprocess.Popen[str]], started: list[Shaped]
) -> None:
    start(
        started,
        Shaped(
            lab,
            "bw-port",
            2,
            Shaping(
                action="bandwidth", tbf=ONE_MBIT, pod_ip=lab.pods[2].ip, external=[f"{lab.subnet}:{SINK_PORTS[1]}"]
            ),
        ),
    )
    assert within(goodput(lab, sink, 2, 0, port=SINK_PORTS[1]), MBIT)
    assert goodput(lab, sink, 2, 0, port=SINK_PORTS[0], seconds=1) > 20 * MBIT


def test_the_target_side_shapes_its_own_egress(
    lab: Lab, sink: dict[int, subprocess.Popen[str]], started: list[Shaped]
) -> None:
    # direction from: T's egress (targetDevice) towards S
    start(
        started,
        Shaped(
            lab,
            "bw-from",
            1,
            Shaping(action="bandwidth", tbf=ONE_MBIT, device="eth0", peers=[lab.pods[0].ip]),
            selector=".Target",
        ),
    )
    assert within(goodput(lab, sink, 1, 0), MBIT)
    assert goodput(lab, sink, 0, 1, seconds=1) > 20 * MBIT


def test_apply_twice_changes_nothing(lab: Lab, started: list[Shaped]) -> None:
    exp = start(
        started,
        Shaped(
            lab, "idem", 0, Shaping(action="bandwidth", tbf=ONE_MBIT, pod_ip=lab.pods[0].ip, peers=[lab.pods[1].ip])
        ),
    )
    first = identities(tree(lab.pods[0].net.netns_path))
    exp.apply()
    assert identities(tree(lab.pods[0].net.netns_path)) == first
    assert list(shaper().active(lab.pods[0].net.netns_path)) == ["eth0"]


def test_netem_is_refused_where_the_kernel_lacks_it(lab: Lab, started: list[Shaped]) -> None:
    if tcdev.probe()["netem"] is None:
        pytest.skip("this kernel has sch_netem: see test_shaping_compose for what it installs")
    before = identities(tree(lab.pods[0].net.netns_path))
    exp = Shaped(lab, "delay", 0, Shaping(action="delay", netem=NetemParams(latency_ns=10**8), unfiltered=True))
    with pytest.raises(FaultError) as info:
        exp.apply()
    assert info.value.message == "delay is not possible on this node: kernel lacks sch_netem"
    assert not info.value.retryable
    assert identities(tree(lab.pods[0].net.netns_path)) == before


def test_missing_device_is_a_permanent_failure_naming_it(lab: Lab) -> None:
    exp = Shaped(lab, "nodev", 0, Shaping(action="bandwidth", tbf=ONE_MBIT, device="eth9", unfiltered=True))
    with pytest.raises(FaultError) as info:
        exp.apply()
    assert "device 'eth9' not found" in info.value.message and not info.value.retryable


def test_capabilities_are_probed_without_touching_the_node() -> None:
    caps = tcdev.probe()
    assert set(caps) == {"netem", "tbf", "htb", "prio", "u32", "bpf"}
    assert caps["htb"] is None and caps["tbf"] is None and caps["bpf"] is None
    for kind, reason in caps.items():
        print(f"{kind}: {reason or 'available'}")


def test_sweeper_view_lists_and_removes_only_ours(lab: Lab) -> None:
    pod = lab.pods[3]
    exp = Shaped(lab, "orphan", 3, Shaping(action="bandwidth", tbf=ONE_MBIT, unfiltered=True, pod_ip=pod.ip))
    before = identities(tree(pod.net.netns_path))
    exp.apply()
    found = tc.list_ours(pod.net.netns_path)
    assert {(f.what, f.kind) for f in found} >= {
        ("qdisc", "htb"),
        ("class", "htb"),
        ("qdisc", "tbf"),
        ("filter", "bpf"),
    }
    assert all(f.device == "eth0" for f in found)
    assert tc.devices_with_ours(pod.net.netns_path) == ["eth0"]  # the sweep's one-dump look
    assert tc.devices_with_ours(lab.pods[2].net.netns_path) == []
    assert tc.remove_ours(pod.net.netns_path, "eth0") == ""
    assert tc.list_ours(pod.net.netns_path) == [] and identities(tree(pod.net.netns_path)) == before
    assert tc.devices_with_ours(pod.net.netns_path) == []
    assert tc.remove_ours(pod.net.netns_path, "eth0") == ""  # idempotent
    exp.recover()  # the fault's own memory is cleaned too (the tree is already gone)
    assert shaper().active(pod.net.netns_path) == {}


def test_links_linger_then_close_and_reopen_transparently(lab: Lab) -> None:
    cache = LinkCache(linger_s=1.0)  # long enough for the next job to come within it under load
    path = lab.pods[1].net.netns_path

    async def index(ipr: object) -> int:
        return tcdev.find_device("eth0", "")[0]

    first, got = cache.run(path, index)
    key = netns_key(path)
    cache.release(key)
    assert cache.run(path, index)[0] is first  # a job within the linger keeps the link
    cache.release(key)
    deadline = time.monotonic() + 10
    while not first.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.closed
    second, again = cache.run(path, index)
    assert second is not first and again == got
    cache.close_all()
    assert second.closed


def test_partition_lets_exempt_control_traffic_through(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # pod 1 plays the NATS server on 8081: a partition of everything pod 0 starts keeps that path
    monkeypatch.setenv(exemptions.ENV, f"{lab.pods[1].ip}:8081")
    spec = Partition(rules=[PartitionRule(chain="output")])
    partition = faults.get("partition")
    ctx = ctx_for("exempt-part", lab.pods[0].server.pid, spec)
    partition.apply(ctx, spec)
    try:
        got = {link for link in lab.reachable(PORTS) if link[0] == 0}
        assert got == {(0, 1, 8081)}
    finally:
        partition.recover(ctx, spec)
    assert lab.reachable(PORTS) == lab.all_links(PORTS)
