"""Every kind is registered whole: its descriptor (crd.kinds), the spec model's admission methods,
the fault planner and fault specs of an executed kind, a fault module for each of its faults in an
injector, its template key in Schedule/Workflow specs. A kind registered halfway fails here.
"""

from __future__ import annotations

import typing

import msgspec
import pytest

from chaosbus.common import messages as m
from chaosbus.common.crd import kinds, orchestration
from chaosbus.common.crd.common import PodSelectorBase
from chaosbus.injector import cluster, faults


def fault_tags() -> set[str]:
    """Tags of the FaultSpec union that node commands carry."""
    return {str(t.__struct_config__.tag) for t in typing.get_args(m.Fault)}


def injector_tags() -> set[str]:
    """Fault tags some injector executes: a node injector, or the cluster injector."""
    return set(faults.REGISTRY) | set(cluster.registry(None, ""))  # type: ignore[arg-type]


def embedded_fields() -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(orchestration.ScheduleSpec)}


def problems(kind: kinds.Kind) -> list[str]:
    """What is missing for `kind` to work end to end ([] when it is registered whole)."""
    out = []
    if kind.executed:
        if not issubclass(kind.spec, PodSelectorBase):
            out.append("an executed kind's spec selects pods (PodSelectorBase)")
        for method in ("validate", "defaulted"):
            if not callable(getattr(kind.spec, method, None)):
                out.append(f"its spec has no {method}()")
        if kind.faults is None:
            out.append("no fault planner (Kind.faults)")
        if not kind.fault_tags:
            out.append("no fault tags (Kind.fault_tags)")
        if not kind.embedded_key:
            out.append("no key for Schedule templates (Kind.embedded_key)")
    elif kind.faults is not None:
        out.append("a fault planner on a kind that is not executed")
    for tag in kind.fault_tags:
        if tag not in fault_tags():
            out.append(f"fault {tag!r} is not a FaultSpec of messages.Fault")
        if tag not in injector_tags():
            out.append(f"fault {tag!r} has no fault module in any injector")
    for action in kind.actions:
        if not action or action != action.strip():
            out.append(f"action {action!r} is not a name")
    if kind.embedded_key and kind.embedded_key not in embedded_fields():
        out.append(f"{kind.embedded_key!r} is not a field of Schedule's spec (orchestration._Embedded)")
    return out


@pytest.mark.parametrize("name", list(kinds.KINDS))
def test_the_kind_is_registered_whole(name: str) -> None:
    assert problems(kinds.KINDS[name]) == []


def test_a_kind_registered_halfway_is_caught() -> None:
    half = kinds.Kind(
        "HalfChaos", orchestration.OpenSpec, "executed", fault_tags=("no-such-fault",), embedded_key="halfChaos"
    )
    assert problems(half) == [
        "an executed kind's spec selects pods (PodSelectorBase)",
        "its spec has no validate()",
        "its spec has no defaulted()",
        "no fault planner (Kind.faults)",
        "fault 'no-such-fault' is not a FaultSpec of messages.Fault",
        "fault 'no-such-fault' has no fault module in any injector",
        "'halfChaos' is not a field of Schedule's spec (orchestration._Embedded)",
    ]


def test_every_fault_spec_and_fault_module_belongs_to_a_kind() -> None:
    claimed = {t for k in kinds.KINDS.values() for t in k.fault_tags}
    assert fault_tags() - claimed == set()
    assert injector_tags() - claimed == set()


def test_the_schedule_template_keys_are_the_descriptors() -> None:
    assert set(orchestration.EMBEDDED_CHAOS_KEYS) == set(kinds.EMBEDDED_KEYS.values())


def test_names_are_unique_and_a_taken_name_is_refused() -> None:
    names = [n for k in kinds.KINDS.values() for n in k.names]
    assert len(names) == len(set(names))
    with pytest.raises(ValueError, match="'nwc' is already NetworkChaos's"):
        kinds.register(kinds.Kind("NowhereChaos", orchestration.OpenSpec, short_names=("nwc",)))
    assert "NowhereChaos" not in kinds.KINDS


def test_one_shot_is_per_action() -> None:
    assert kinds.one_shot("PodChaos", {"action": "pod-kill"}) is True
    assert kinds.one_shot("PodChaos", {"action": "pod-failure"}) is False
    assert kinds.one_shot("AWSChaos", {"action": "ec2-restart"}) is True
    assert kinds.one_shot("NetworkChaos", {"action": "partition"}) is False
    assert kinds.one_shot("NoSuchChaos", {"action": "pod-kill"}) is False
