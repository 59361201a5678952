"""How an executed kind's spec becomes one target's fault: the kind descriptors' planners
(`crd.kinds.Kind.faults`), with the NetworkChaos direction tables and parameter conversions. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from chaosbus.common import messages as m
from chaosbus.common.crd.dnschaos import DNSChaosSpec
from chaosbus.common.crd.helloworld import HelloWorldChaosSpec
from chaosbus.common.crd.networkchaos import NetworkChaosSpec
from chaosbus.common.crd.podchaos import PodChaosSpec
from chaosbus.common.crd.timechaos import TimeChaosSpec
from chaosbus.common.durations import parse_duration

if TYPE_CHECKING:
    from chaosbus.common.crd.objects import ChaosObject

MAIN = "."
TARGET = ".Target"


@dataclass(frozen=True)
class Selected:
    """One record's target: the pod, and the container for container-level kinds."""

    record_id: str
    selector_key: str
    pod: m.TargetPod
    container: m.ContainerRef | None = None


def podchaos(obj: ChaosObject, target: Selected, everyone: list[Selected]) -> m.Fault:
    spec = obj.spec
    assert isinstance(spec, PodChaosSpec)
    if spec.action == "pod-kill":
        return m.PodKill(grace_period=spec.grace_period)
    if spec.action == "container-kill":
        names = [target.container.name] if target.container else list(spec.container_names)
        return m.ContainerKill(container_names=names)
    return m.PodFailure()


def networkchaos(obj: ChaosObject, target: Selected, everyone: list[Selected]) -> m.Fault:
    spec = obj.spec
    assert isinstance(spec, NetworkChaosSpec)
    if spec.action != "partition":
        return shaping_for(spec, target, everyone)
    return partition_for(spec, target, everyone)


def dnschaos(obj: ChaosObject, target: Selected, everyone: list[Selected]) -> m.Fault:
    spec = obj.spec
    assert isinstance(spec, DNSChaosSpec)
    return m.Dns(action=spec.action, patterns=list(spec.patterns), addresses=list(spec.addresses))  # type: ignore[arg-type]


def helloworldchaos(obj: ChaosObject, target: Selected, everyone: list[Selected]) -> m.Fault:
    assert isinstance(obj.spec, HelloWorldChaosSpec)
    return m.HelloWorld(container_names=[target.container.name] if target.container else [])


def timechaos(obj: ChaosObject, target: Selected, everyone: list[Selected]) -> m.Fault:
    spec = obj.spec
    assert isinstance(spec, TimeChaosSpec)
    return m.TimeSkew(
        offset_ns=spec.offset_ns(),
        clock_mask=spec.clock_mask(),
        container_names=[target.container.name] if target.container else list(spec.container_names),
    )


class Everyone(list[Selected]):
    """An experiment's targets, with each side's pod IPs computed once: planning every target of a
    1,000-target experiment must not recompute them per target (O(n^2), measured 347 ms).
    """

    side_ips: dict[str, list[str]] | None = None


def _side_ips(everyone: list[Selected]) -> dict[str, list[str]]:
    if isinstance(everyone, Everyone) and everyone.side_ips is not None:
        return everyone.side_ips
    ips = {
        key: sorted({s.pod.pod_ip for s in everyone if s.selector_key == key and s.pod.pod_ip})
        for key in (MAIN, TARGET)
    }
    if isinstance(everyone, Everyone):
        everyone.side_ips = ips
    return ips


def partition_for(spec: NetworkChaosSpec, target: Selected, everyone: list[Selected]) -> m.Partition:
    """Chaos Mesh's direction table: the selector side (S) and the target side (T) each get rules.

    to: S output drops dst in T, T input drops src in S. from: S input drops src in T, T output
    drops dst in S. both: all four. Without target and externals, S drops the whole chain.
    """
    ips = _side_ips(everyone)
    to = spec.direction in ("to", "both")
    frm = spec.direction in ("from", "both")
    # An empty peer list means "every packet", so it is only ever sent when the spec names no peer
    # at all; peers that merely have no address yet must not turn into a full blackhole.
    unfiltered = spec.target is None and not spec.external_targets
    rules: list[m.PartitionRule] = []
    if target.selector_key == MAIN:
        peers, ext = ips[TARGET], list(spec.external_targets)
        chains = [c for c, on in (("output", to), ("input", frm)) if on]
        if peers or ext or unfiltered:
            rules = [m.PartitionRule(chain=c, peers=peers, external=ext) for c in chains]  # type: ignore[arg-type]
        return m.Partition(device=spec.device, rules=rules)
    if ips[MAIN]:
        chains = [c for c, on in (("output", frm), ("input", to)) if on]
        rules = [m.PartitionRule(chain=c, peers=ips[MAIN]) for c in chains]  # type: ignore[arg-type]
    return m.Partition(device=spec.target_device, rules=rules)


def shaping_for(spec: NetworkChaosSpec, target: Selected, everyone: list[Selected]) -> m.Shaping:
    """Chaos Mesh's direction table for netem/bandwidth: `to` shapes S egress towards T (pods and
    externals), `from` shapes T egress (`targetDevice`) towards S, `both` does both. Without target
    and externals, S egress is shaped whatever the destination. A side with nothing to do gets a
    Shaping without parameters.
    """
    ips = _side_ips(everyone)
    base = m.Shaping(
        action=spec.action,
        pod_ip=target.pod.pod_ip,
        device=spec.device if target.selector_key == MAIN else spec.target_device,
    )
    if target.selector_key == MAIN:
        active = spec.direction in ("to", "both")
        peers, external = ips[TARGET], list(spec.external_targets)
        unfiltered = spec.target is None and not spec.external_targets
    else:
        active = spec.direction in ("from", "both")
        peers, external, unfiltered = ips[MAIN], [], False
    # As for partition: peers that merely have no address yet never widen into "everything".
    if not active or not (peers or external or unfiltered):
        return base
    if spec.action == "bandwidth":
        params: dict[str, object] = {"tbf": tbf_params(spec)}
    else:
        params = {"netem": netem_params(spec)}
    return msgspec.structs.replace(base, peers=peers, external=external, unfiltered=unfiltered, **params)


def netem_params(spec: NetworkChaosSpec) -> m.NetemParams:
    """Every non-nil netem block merged into one netem, whatever the action (as Chaos Mesh does).

    Chaos Mesh's rules kept: jitter's correlation only counts with a jitter, reordering only with a
    latency (gap 0 means 1, as tc does).
    """
    out: dict[str, object] = {}
    if spec.delay is not None:
        d = spec.delay
        out["latency_ns"] = _ns(d.latency)
        out["jitter_ns"] = _ns(d.jitter or "0")
        if out["jitter_ns"]:
            out["delay_correlation"] = float(d.correlation or 0)
        if d.reorder is not None and out["latency_ns"] and float(d.reorder.reorder or 0) > 0:
            out["reorder"] = float(d.reorder.reorder)
            out["reorder_correlation"] = float(d.reorder.correlation or 0)
            out["gap"] = max(d.reorder.gap, 1)
    for name in ("loss", "duplicate", "corrupt"):
        block = getattr(spec, name)
        if block is not None:
            out[name] = float(getattr(block, name) or 0)
            out[f"{name}_correlation"] = float(block.correlation or 0)
    if spec.rate is not None:
        out["rate"] = tc_rate(spec.rate.rate)
    return m.NetemParams(**out)  # type: ignore[arg-type]


def tbf_params(spec: NetworkChaosSpec) -> m.TbfParams:
    """The bandwidth block as tbf parameters. `peakrate` (bytes/s) and `minburst` only count together."""
    bw = spec.bandwidth
    assert bw is not None  # validation requires the block for action bandwidth
    peak = bw.peakrate is not None and bw.minburst is not None and bw.peakrate > 0
    return m.TbfParams(
        rate=bandwidth_rate(bw.rate),
        limit=bw.limit,
        buffer=bw.buffer,
        peakrate=(bw.peakrate or 0) if peak else 0,
        minburst=(bw.minburst or 0) if peak else 0,
    )


_RATE = re.compile(r"^\s*([0-9]+)\s*([a-z]+)\s*$")
_PREFIX = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def bandwidth_rate(text: str) -> int:
    """`bandwidth.rate` in bytes per second, as Chaos Mesh documents it: `bps` is bytes per second with
    binary multiples (1kbps = 1024 B/s); `bit` units are bits per second with decimal multiples.

    Raises:
        ValueError: not a number with one of those units.
    """
    n, prefix, unit = _split_rate(text)
    if unit == "bps":
        return int(n * 1024 ** _PREFIX[prefix])
    return int(n * 1000 ** _PREFIX[prefix] // 8)


def tc_rate(text: str) -> int:
    """netem `rate.rate` in bytes per second with tc's units (passed to tc verbatim by Chaos Mesh):
    `bit`/`kbit`/... bits per second, `bps`/`kbps`/... bytes per second, decimal multiples.
    """
    n, prefix, unit = _split_rate(text)
    return int(n * 1000 ** _PREFIX[prefix] // (1 if unit == "bps" else 8))


def _split_rate(text: str) -> tuple[int, str, str]:
    match = _RATE.match(text.lower())
    if match is None:
        raise ValueError(f"invalid rate {text!r}")
    n, suffix = int(match.group(1)), match.group(2)
    for unit in ("bps", "bit"):
        prefix = suffix.removesuffix(unit)
        if suffix.endswith(unit) and prefix in _PREFIX:
            return n, prefix, unit
    raise ValueError(f"invalid rate unit in {text!r}")


def _ns(text: str) -> int:
    return round(parse_duration(text) * 1e9)
