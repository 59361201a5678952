"""What each experiment kind asks of one target: the records selection produces and the fault
parameters carried in commands (including NetworkChaos partition rules per side). Pure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from chaosbus.common import messages as m
from chaosbus.common.crd import ChaosObject
from chaosbus.common.crd.helloworld import HelloWorldChaosSpec
from chaosbus.common.crd.networkchaos import NetworkChaosSpec
from chaosbus.common.crd.podchaos import PodChaosSpec
from chaosbus.scheduler import selection as sel

MAIN = "."
TARGET = ".Target"


@dataclass(frozen=True)
class Selected:
    """One record's target: the pod, and the container for container-level kinds."""

    record_id: str
    selector_key: str
    pod: m.TargetPod
    container: m.ContainerRef | None = None


def select(obj: ChaosObject, world: sel.World, config: sel.SelectionConfig,
           rng: random.Random) -> list[Selected]:
    """Run the kind's selectors once; raises SelectionError naming the field."""
    spec = obj.spec
    pods = sel.select_pods(spec.selector, spec.mode, spec.value, world, config, rng, path="spec")
    if isinstance(spec, PodChaosSpec) and spec.action == "container-kill" or isinstance(
            spec, HelloWorldChaosSpec):
        names = spec.container_names
        return [Selected(sel.container_record_id(p, c), MAIN, p, c) for p, c in sel.container_targets(pods, names)]
    out = [Selected(sel.pod_record_id(p), MAIN, p) for p in pods]
    if isinstance(spec, NetworkChaosSpec) and spec.target is not None:
        t = spec.target
        targets = sel.select_pods(t.selector, t.mode, t.value, world, config, rng, path="spec.target")
        out += [Selected(sel.pod_record_id(p), TARGET, p) for p in targets]
    return out


def container_ids(target: Selected, current: m.TargetPod | None) -> list[str]:
    """Container ids at command time: a restarted container has a new id, so prefer the live pod."""
    pod = current if current is not None and current.uid == target.pod.uid else target.pod
    if target.container is not None:
        return [c.container_id for c in pod.containers if c.name == target.container.name and c.container_id]
    return [c.container_id for c in pod.containers if c.container_id]


def fault_for(obj: ChaosObject, target: Selected, everyone: list[Selected]) -> m.Fault:
    spec = obj.spec
    if isinstance(spec, PodChaosSpec):
        if spec.action == "pod-kill":
            return m.PodKill(grace_period=spec.grace_period)
        if spec.action == "container-kill":
            names = [target.container.name] if target.container else list(spec.container_names)
            return m.ContainerKill(container_names=names)
        return m.PodFailure()
    if isinstance(spec, NetworkChaosSpec):
        if spec.action != "partition":
            return m.Shaping(action=spec.action, device=spec.device if target.selector_key == MAIN else
                             spec.target_device)
        return partition_for(spec, target, everyone)
    return m.HelloWorld(container_names=[target.container.name] if target.container else [])


def partition_for(spec: NetworkChaosSpec, target: Selected, everyone: list[Selected]) -> m.Partition:
    """Chaos Mesh's direction table: the selector side (S) and the target side (T) each get rules.

    to: S output drops dst in T, T input drops src in S. from: S input drops src in T, T output
    drops dst in S. both: all four. Without target and externals, S drops the whole chain.
    """
    ips = {key: sorted({s.pod.pod_ip for s in everyone if s.selector_key == key and s.pod.pod_ip})
           for key in (MAIN, TARGET)}
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


def one_shot(obj: ChaosObject) -> bool:
    return obj.spec.is_one_shot()
