"""What each experiment kind asks of one target: the records selection produces and the fault
each target gets, both as its kind descriptor (`crd.kinds`) declares. Pure.
"""

from __future__ import annotations

import random

from chaosbus.common import messages as m
from chaosbus.common import subjects
from chaosbus.common.crd import ChaosObject, kinds
from chaosbus.common.crd.selectors import PodSelector
from chaosbus.common.faultplan import (
    MAIN,
    TARGET,
    Everyone,
    Selected,
    bandwidth_rate,
    netem_params,
    partition_for,
    shaping_for,
    tbf_params,
    tc_rate,
)
from chaosbus.scheduler import selection as sel

__all__ = [
    "MAIN",
    "TARGET",
    "Everyone",
    "Selected",
    "api_level",
    "bandwidth_rate",
    "container_ids",
    "fault_for",
    "netem_params",
    "one_shot",
    "partition_for",
    "route",
    "select",
    "shaping_for",
    "tbf_params",
    "tc_rate",
]


def _action(obj: ChaosObject) -> kinds.Action:
    return kinds.KINDS[obj.kind].action(kinds.action_of(obj.spec))


def select(obj: ChaosObject, world: sel.World, config: sel.SelectionConfig, rng: random.Random) -> list[Selected]:
    """Run the kind's selectors once; raises SelectionError naming the field."""
    spec = obj.spec
    network = kinds.KINDS[obj.kind].network
    pods = sel.select_pods(spec.selector, spec.mode, spec.value, world, config, rng, path="spec", network=network)
    action = _action(obj)
    if action.containers:
        names = getattr(spec, "container_names", [])
        out = [
            Selected(sel.container_record_id(p, c), MAIN, p, c)
            for p, c in sel.container_targets(pods, names, every=action.all_containers)
        ]
    else:
        out = [Selected(sel.pod_record_id(p), MAIN, p) for p in pods]
    t = getattr(spec, "target", None)
    if isinstance(t, PodSelector):  # a second side (NetworkChaos's `target`)
        targets = sel.select_pods(t.selector, t.mode, t.value, world, config, rng, path="spec.target", network=network)
        out += [Selected(sel.pod_record_id(p), TARGET, p) for p in targets]
    if len(out) > config.max_targets:
        raise sel.SelectionError(
            f"spec.selector: {len(out)} targets selected, more than the {config.max_targets} "
            "one experiment may have (scheduler --max-targets)"
        )
    return out


def api_level(obj: ChaosObject) -> bool:
    """Whether the experiment's faults are Kubernetes API calls (the cluster injector's job in
    cluster mode) rather than kernel or process changes on the target's node.
    """
    return _action(obj).runs_on == kinds.CLUSTER


def route(obj: ChaosObject, target: Selected, *, cluster_injector: bool) -> str:
    """The injector that gets this target's actions: the cluster injector for API-level faults
    when one is deployed, else the target pod's node ("" when unknown: every node).
    """
    if cluster_injector and api_level(obj):
        return subjects.CLUSTER_NODE
    return target.pod.node


def container_ids(target: Selected, current: m.TargetPod | None) -> list[str]:
    """Container ids at command time: a restarted container has a new id, so prefer the live pod."""
    pod = current if current is not None and current.uid == target.pod.uid else target.pod
    if target.container is not None:
        return [c.container_id for c in pod.containers if c.name == target.container.name and c.container_id]
    return [c.container_id for c in pod.containers if c.container_id]


def fault_for(obj: ChaosObject, target: Selected, everyone: list[Selected]) -> m.Fault:
    """The fault one target gets, from its kind's planner."""
    planner = kinds.KINDS[obj.kind].faults
    assert planner is not None, f"{obj.kind} is not an executed kind"
    fault = planner(obj, target, everyone)
    assert isinstance(fault, m.FaultSpec)
    return fault  # type: ignore[return-value]


def one_shot(obj: ChaosObject) -> bool:
    return kinds.one_shot(obj.kind, obj.spec)
