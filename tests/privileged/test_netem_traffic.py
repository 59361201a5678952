"""NetworkChaos netem measured on real traffic between process pods: Chaos Mesh YAML, planned per
side by the scheduler's own code, applied and recovered by the injector's network-shaping fault,
then UDP and TCP between the pods' namespaces show what the kernel does with it: latency, jitter
and its correlation, loss, duplicates, corrupted checksums, reordering with a gap, netem's rate,
netem composed with bandwidth and with another netem on one pod, direction and target.

Needs a kernel with sch_netem: `make test-kernel` runs this module in a VM with Debian's stock
kernel. Elsewhere it skips, saying why (and test_shaping checks the per-target refusal).
Emulated CPUs add about a millisecond of noise and rare 15-30 ms spikes, so delays are 100 ms
and bounds leave room above (never below: netem never delivers early).
"""

from __future__ import annotations

import itertools
import statistics
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from helpers.goodput import sinks
from helpers.netprobe import Agent, Arrival, agents, fastest

from chaosbus.common import messages as m
from chaosbus.common.crd.networkchaos import NetworkChaosSpec
from chaosbus.common.crd.objects import decode_object
from chaosbus.injector.backends import tcdev
from chaosbus.scheduler import plan

from .conftest import Lab
from .shaping_kit import Shaped, goodput, identities, shaper, tree

pytestmark = [pytest.mark.privileged, pytest.mark.netem]

MBIT = 1_000_000
DELAY_MS = 100.0
QUICK_MS = 50.0  # the fastest of a few unshaped packets stays far below this, on a loaded host too
SLOW_MS = 1.8 * DELAY_MS  # the fastest packet under one delay stays below this (under two it would not)
runs = itertools.count(1)


@pytest.fixture(scope="session", autouse=True)
def netem() -> None:
    """Skips before the lab's pods are made (autouse session fixtures come first)."""
    reason = tcdev.probe()["netem"]
    if reason is not None:
        print(f"skipping netem traffic tests: {reason} (make test-kernel runs them in a VM)")
        pytest.skip(f"{reason}; make test-kernel runs these in a VM with a stock kernel")


@pytest.fixture(scope="module")
def probe(lab: Lab) -> Iterator[dict[int, Agent]]:
    with agents({p.index: p.net.netns_path for p in lab.pods}) as found:
        yield found


class Experiment:
    """One NetworkChaos (Chaos Mesh YAML) on lab pods: every side planned like the scheduler does."""

    def __init__(
        self, lab: Lab, name: str, spec: dict[str, Any], selected: tuple[int, ...], targets: tuple[int, ...] = ()
    ) -> None:
        doc = {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "NetworkChaos",
            "metadata": {"name": name},
            "spec": {"mode": "all", "selector": {"labelSelectors": {"app": "x"}}, **spec},
        }
        if targets:
            doc["spec"]["target"] = {"mode": "all", "selector": {"labelSelectors": {"app": "y"}}}
        decoded = decode_object(yaml.safe_load(yaml.safe_dump(doc))).spec
        assert isinstance(decoded, NetworkChaosSpec)
        everyone = [
            plan.Selected(
                f"s{i}", key, m.TargetPod(uid=f"uid-{i}", namespace="default", name=f"pod-{i}", pod_ip=lab.pods[i].ip)
            )
            for key, pods in ((plan.MAIN, selected), (plan.TARGET, targets))
            for i in pods
        ]
        self.sides = [
            Shaped(
                lab, name, int(s.pod.name.removeprefix("pod-")), plan.shaping_for(decoded, s, everyone), s.selector_key
            )
            for s in everyone
        ]

    def apply(self) -> None:
        for side in self.sides:
            said = side.apply()
            assert "applied" in said or "nothing to shape" in said, said

    def recover(self) -> None:
        for side in self.sides:
            said = side.recover()
            assert "recovered" in said or "nothing" in said, said


@pytest.fixture
def clean(lab: Lab) -> Iterator[list[Experiment]]:
    """Experiments a test starts: recovered at the end whatever happened, every device then exactly
    as before (qdiscs, classes and filters, by identity) and nothing left in the shaper's memory.
    """
    before = {p.index: identities(tree(p.net.netns_path)) for p in lab.pods}
    started: list[Experiment] = []
    yield started
    for exp in started:
        exp.recover()
    for p in lab.pods:
        assert identities(tree(p.net.netns_path)) == before[p.index], f"pod {p.index} was not restored"
        assert shaper().active(p.net.netns_path) == {}


def start(clean: list[Experiment], exp: Experiment) -> Experiment:
    clean.append(exp)
    exp.apply()
    return exp


def delay(latency: str = "100ms", **more: Any) -> dict[str, Any]:
    return {"action": "delay", "delay": {"latency": latency, **more}}


def one_way(probe: dict[int, Agent], lab: Lab, src: int, dst: int, count: int = 10) -> list[Arrival]:
    run = next(runs)
    probe[src].send(lab.pods[dst].ip, run, count, interval=0.01)
    return probe[dst].arrivals(run, settle=DELAY_MS * 3 / 1000)


def one_way_ms(probe: dict[int, Agent], lab: Lab, src: int, dst: int) -> float:
    """The fastest of 10 datagrams' one-way latency."""
    got = one_way(probe, lab, src, dst)
    assert len(got) == 10, f"{10 - len(got)} of 10 packets {src} -> {dst} lost"
    return min(a.one_way_ms for a in got)


def test_delay_applies_towards_the_target_only_until_recovered(
    lab: Lab, probe: dict[int, Agent], clean: list[Experiment]
) -> None:
    exp = start(clean, Experiment(lab, "delay", delay(), selected=(0,), targets=(1,)))
    shaped = probe[0].rtts(lab.pods[1].ip, count=20)
    other = probe[0].rtts(lab.pods[2].ip)
    print(f"\ndelay 100ms: RTT to target fastest {fastest(shaped):.1f} ms, to another pod {fastest(other):.1f} ms")
    assert None not in shaped
    assert DELAY_MS <= fastest(shaped) < SLOW_MS and fastest(other) < QUICK_MS
    exp.recover()
    assert fastest(probe[0].rtts(lab.pods[1].ip)) < QUICK_MS


def test_jitter_spreads_latency_and_full_correlation_freezes_it(
    lab: Lab, probe: dict[int, Agent], clean: list[Experiment]
) -> None:
    # a wide jitter, so that emulation noise (a few ms, more on a loaded host) stays small beside it
    spec = {"latency": "250ms", "jitter": "200ms"}
    jittery = start(clean, Experiment(lab, "jitter", delay(**spec, correlation="0"), selected=(0,)))
    free = [v for v in probe[0].rtts(lab.pods[1].ip, count=24) if v is not None]
    jittery.recover()
    frozen_exp = start(clean, Experiment(lab, "frozen", delay(**spec, correlation="100"), selected=(0,)))
    frozen = [v for v in probe[0].rtts(lab.pods[1].ip, count=24) if v is not None]
    frozen_exp.recover()
    # how far the lower quartile is above the fastest packet: noise only adds, so for one repeated
    # delay this is the noise of the calmer packets alone, for a uniform delay a quarter of its width
    spread, frozen_spread = (statistics.quantiles(v, n=4)[0] - min(v) for v in (free, frozen))
    print(
        f"\njitter 250ms ± 200ms: RTT {min(free):.0f}-{max(free):.0f} ms, lower quartile {spread:.1f} ms above "
        f"the fastest; correlation 100: {min(frozen):.0f}-{max(frozen):.0f} ms, {frozen_spread:.1f} ms above"
    )
    assert len(free) == len(frozen) == 24
    # uniform in [50, 450) ms: spread over most of the range, never below it
    assert min(free) >= 50 and max(free) - min(free) > 200 and spread > 50
    # correlation 100% makes netem reuse its previous random number: every packet the same delay
    assert min(frozen) >= 50 and frozen_spread < spread / 4


def udp_counters(agent: Agent) -> dict[str, int]:
    return agent.snmp()["Udp"]


def test_loss_drops_that_share_of_packets(lab: Lab, probe: dict[int, Agent], clean: list[Experiment]) -> None:
    start(clean, Experiment(lab, "loss", {"action": "loss", "loss": {"loss": "30"}}, selected=(0,), targets=(1,)))
    run, other = next(runs), next(runs)
    full = udp_counters(probe[1])["RcvbufErrors"]
    probe[0].send(lab.pods[1].ip, run, 500)
    probe[0].send(lab.pods[2].ip, other, 200)
    got, untouched = probe[1].arrivals(run), probe[2].arrivals(other)
    lost = 1 - len({a.seq for a in got}) / 500
    print(f"\nloss 30%: {lost:.1%} of 500 lost towards the target, {200 - len(untouched)} of 200 elsewhere")
    assert udp_counters(probe[1])["RcvbufErrors"] == full  # every datagram netem let through was read
    assert 0.22 <= lost <= 0.38
    assert len(untouched) == 200


def test_duplicate_delivers_that_share_twice(lab: Lab, probe: dict[int, Agent], clean: list[Experiment]) -> None:
    start(
        clean,
        Experiment(lab, "dup", {"action": "duplicate", "duplicate": {"duplicate": "40"}}, selected=(0,), targets=(1,)),
    )
    run = next(runs)
    probe[0].send(lab.pods[1].ip, run, 500)
    got = probe[1].arrivals(run)
    seqs = [a.seq for a in got]
    twice = len(seqs) - len(set(seqs))
    print(f"\nduplicate 40%: {twice} of 500 arrived twice, {500 - len(set(seqs))} lost")
    assert set(seqs) == set(range(500))
    assert 0.32 * 500 <= twice <= 0.48 * 500


def test_corrupt_flips_bits_that_checksums_catch(lab: Lab, probe: dict[int, Agent], clean: list[Experiment]) -> None:
    start(
        clean,
        Experiment(lab, "corrupt", {"action": "corrupt", "corrupt": {"corrupt": "30"}}, selected=(0,), targets=(1,)),
    )
    before = udp_counters(probe[1])
    run = next(runs)
    probe[0].send(lab.pods[1].ip, run, 500, size=1000, interval=0.002)
    got = probe[1].arrivals(run)
    after = udp_counters(probe[1])
    bad_sums, full = (after[k] - before[k] for k in ("InCsumErrors", "RcvbufErrors"))
    # UDP verifies a checksum when the datagram is read, so a full receive buffer would drop
    # corrupted and intact datagrams alike: the share is taken among those that were read
    share = bad_sums / (bad_sums + len(got))
    print(
        f"\ncorrupt 30%: {bad_sums} of 500 datagrams failed their UDP checksum, {len(got)} delivered intact, "
        f"{500 - len(got) - bad_sums} lost otherwise ({full} to a full receive buffer)"
    )
    # a flipped bit lands anywhere in the frame: mostly in the UDP datagram (a checksum error),
    # rarely in the Ethernet or IP header (dropped before UDP sees it)
    assert bad_sums + len(got) >= 400 and 0.22 <= share <= 0.38
    assert all(a.intact for a in got), "a corrupted payload was delivered"


def test_reorder_sends_every_gapth_packet_ahead(lab: Lab, probe: dict[int, Agent], clean: list[Experiment]) -> None:
    start(
        clean,
        Experiment(
            lab, "reorder", delay(reorder={"reorder": "100", "correlation": "0", "gap": 4}), selected=(0,), targets=(1,)
        ),
    )
    run = next(runs)
    probe[0].send(lab.pods[1].ip, run, 40, interval=0.002)
    got = probe[1].arrivals(run, settle=0.5)
    order = [a.seq for a in got]
    every_fourth = {s for s in range(40) if s % 4 == 3}  # gap 4: three packets delayed, the fourth sent at once
    # netem's delay is a floor, so a packet faster than it was certainly not delayed; one that was
    # not may still arrive late (a starved emulated CPU), but then it overtook the one sent before it
    fast = {a.seq for a in got if a.one_way_ms < DELAY_MS}
    overtook = {s for s in order if s > 0 and order.index(s) < order.index(s - 1)}
    inversions = sum(1 for a, b in itertools.pairwise(order) if b < a)
    print(
        f"\nreorder 100% gap 4: faster than the delay {sorted(fast)}, overtook {sorted(overtook)}, "
        f"{inversions} inversions in arrival order"
    )
    assert sorted(order) == list(range(40))
    assert fast <= every_fourth and every_fourth <= fast | overtook
    assert len(fast) >= len(every_fourth) / 2
    assert inversions > 0


@pytest.fixture(scope="module")
def sink(lab: Lab) -> Iterator[dict[int, subprocess.Popen[str]]]:
    with sinks({1: lab.pods[1].net.netns_path}) as procs:
        yield procs


def test_netem_rate_caps_throughput(lab: Lab, sink: dict[int, subprocess.Popen[str]], clean: list[Experiment]) -> None:
    exp = start(
        clean, Experiment(lab, "rate", {"action": "netem", "rate": {"rate": "2mbit"}}, selected=(0,), targets=(1,))
    )
    capped = goodput(lab, sink, 0, 1)
    exp.recover()
    free = goodput(lab, sink, 0, 1, seconds=1)
    print(f"\nnetem rate 2mbit: {capped / MBIT:.2f} Mbit/s, after recovery {free / MBIT:.0f} Mbit/s")
    # netem counts whole frames, TCP goodput is payload: about 4% less than the rate
    assert 0.8 * 2 * MBIT <= capped <= 2 * MBIT and free > 20 * MBIT


def test_delay_and_bandwidth_compose_and_recover_independently(
    lab: Lab, probe: dict[int, Agent], sink: dict[int, subprocess.Popen[str]], clean: list[Experiment]
) -> None:
    pod0 = lab.pods[0].net.netns_path
    # towards pod 1 both rules meet: one class chaining netem then tbf. The bucket's queue holds
    # several round trips' worth at 2 mbit, so TCP fills the link despite the delay.
    lag = start(clean, Experiment(lab, "cmp-delay", delay(), selected=(0,), targets=(1,)))
    cap = start(
        clean,
        Experiment(
            lab,
            "cmp-bw",
            {"action": "bandwidth", "bandwidth": {"rate": "2mbit", "limit": 100000, "buffer": 10000}},
            selected=(0,),
            targets=(1,),
        ),
    )
    both_rtt, both_rate = fastest(probe[0].rtts(lab.pods[1].ip)), goodput(lab, sink, 0, 1, seconds=3)
    assert sorted(o.kind for o in tree(pod0) if o.what == "qdisc" and o.kind in ("netem", "tbf")) == ["netem", "tbf"]
    lag.recover()
    bw_rtt, bw_rate = fastest(probe[0].rtts(lab.pods[1].ip)), goodput(lab, sink, 0, 1)
    cap.recover()
    free = goodput(lab, sink, 0, 1, seconds=1)
    print(
        f"\ndelay 100ms + bandwidth 2mbit: RTT {both_rtt:.1f} ms, {both_rate / MBIT:.2f} Mbit/s; "
        f"delay recovered: RTT {bw_rtt:.1f} ms, {bw_rate / MBIT:.2f} Mbit/s; both recovered {free / MBIT:.0f} Mbit/s"
    )
    # tbf's exactness is measured on the host (test_shaping, within 20%); here a sender starved by
    # emulation on a loaded machine may leave the bucket idle, so only the cap is held tight
    assert DELAY_MS <= both_rtt < SLOW_MS and 0.6 * 2 * MBIT <= both_rate <= 1.1 * 2 * MBIT
    assert bw_rtt < QUICK_MS and 0.6 * 2 * MBIT <= bw_rate <= 1.1 * 2 * MBIT
    assert fastest(probe[0].rtts(lab.pods[1].ip)) < QUICK_MS and free > 20 * MBIT


def test_two_netem_experiments_compose_and_recover_independently(
    lab: Lab, probe: dict[int, Agent], clean: list[Experiment]
) -> None:
    lag = start(clean, Experiment(lab, "two-delay", delay(), selected=(0,), targets=(1,)))
    drop = start(
        clean, Experiment(lab, "two-loss", {"action": "loss", "loss": {"loss": "50"}}, selected=(0,), targets=(1, 2))
    )

    def measure(dst: int) -> tuple[float, float]:
        """(fastest one-way ms, share lost) of 200 datagrams from pod 0."""
        run = next(runs)
        probe[0].send(lab.pods[dst].ip, run, 200)
        got = probe[dst].arrivals(run, settle=DELAY_MS * 3 / 1000)
        return min(a.one_way_ms for a in got), 1 - len(got) / 200

    composed = {dst: measure(dst) for dst in (1, 2, 3)}
    lag.recover()
    loss_only = {dst: measure(dst) for dst in (1, 2)}
    print(f"\ndelay + loss 50%: (one-way ms, lost) {composed}; delay recovered: {loss_only}")
    # towards pod 1: both; pod 2: loss only; pod 3: neither
    assert composed[1][0] >= DELAY_MS and 0.38 <= composed[1][1] <= 0.62
    assert composed[2][0] < QUICK_MS and 0.38 <= composed[2][1] <= 0.62
    assert composed[3][0] < QUICK_MS and composed[3][1] == 0
    assert loss_only[1][0] < QUICK_MS and 0.38 <= loss_only[1][1] <= 0.62
    drop.recover()
    assert fastest(probe[0].rtts(lab.pods[1].ip)) < QUICK_MS


@pytest.mark.parametrize("direction", ["to", "from", "both"])
def test_direction_picks_which_egress_is_delayed(
    lab: Lab, probe: dict[int, Agent], clean: list[Experiment], direction: str
) -> None:
    start(clean, Experiment(lab, f"dir-{direction}", {**delay(), "direction": direction}, selected=(0,), targets=(1,)))
    there, back = one_way_ms(probe, lab, 0, 1), one_way_ms(probe, lab, 1, 0)
    print(f"\ndirection {direction}: selected -> target {there:.1f} ms, target -> selected {back:.1f} ms")
    assert (there >= DELAY_MS) == (direction in ("to", "both"))
    assert (back >= DELAY_MS) == (direction in ("from", "both"))
    assert min(there, back) < QUICK_MS or direction == "both"


def test_targets_and_external_targets_select_the_destinations(
    lab: Lab, probe: dict[int, Agent], clean: list[Experiment]
) -> None:
    start(
        clean, Experiment(lab, "targets", {**delay(), "externalTargets": [lab.pods[3].ip]}, selected=(0,), targets=(1,))
    )
    got = {dst: one_way_ms(probe, lab, 0, dst) for dst in (1, 2, 3)}
    print(f"\ntarget pod 1 + external pod 3's IP: one-way ms {got}")
    assert got[1] >= DELAY_MS and got[3] >= DELAY_MS and got[2] < QUICK_MS


def test_no_target_delays_every_destination(lab: Lab, probe: dict[int, Agent], clean: list[Experiment]) -> None:
    start(clean, Experiment(lab, "everywhere", delay(), selected=(2,)))
    got = {dst: one_way_ms(probe, lab, 2, dst) for dst in (0, 1, 3)}
    back = one_way_ms(probe, lab, 0, 2)
    print(f"\nno target: one-way ms {got}, into the selected pod {back:.1f}")
    assert all(v >= DELAY_MS for v in got.values()) and back < QUICK_MS
