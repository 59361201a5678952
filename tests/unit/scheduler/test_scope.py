"""The scheduler honours Chaos Mesh's controller scope (CLUSTER_SCOPED, TARGET_NAMESPACE,
ENABLE_FILTER_NAMESPACE): parsed from the environment as the deployment sets it, fed into selection,
and an out-of-scope target ends as a selection error the recorder writes into status.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from unit.scheduler.test_core import T0, chaos, event, ops

from chaosbus.common import messages as m
from chaosbus.common.config import ControllerScope, controller_scope
from chaosbus.recorder import core as rc
from chaosbus.scheduler.app import selection_config
from chaosbus.scheduler.core import SchedulerCore


def target(namespace: str, name: str) -> m.TargetPod:
    return m.TargetPod(
        uid=f"uid-{name}",
        namespace=namespace,
        name=name,
        labels={"app": "web"},
        node="n1",
        phase="Running",
        containers=[m.ContainerRef(name="main", container_id=f"process://{name}")],
    )


def scheduler(env: dict[str, str]) -> SchedulerCore:
    core = SchedulerCore(selection_config(controller_scope(env=env)), rng=random.Random(7))
    for pod in (target("team-a", "web-a"), target("team-b", "web-b")):
        core.on_target(f"pod.{pod.namespace}.{pod.name}", pod)
    return core


def in_namespace(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}


SINGLE = {"CLUSTER_SCOPED": "false", "TARGET_NAMESPACE": "team-a"}


# --- parsing ----------------------------------------------------------------------------------------


def test_default_scope_is_cluster_wide_without_filter() -> None:
    assert controller_scope(env={}) == ControllerScope(True, "", False)


def test_chaos_mesh_environment_selects_one_namespace_and_the_filter() -> None:
    env = {**SINGLE, "ENABLE_FILTER_NAMESPACE": "True"}
    assert controller_scope(env=env) == ControllerScope(False, "team-a", True)


def test_target_namespace_flag_alone_means_namespace_scoped_and_wins_over_env() -> None:
    got = controller_scope(target_namespace="team-c", env={"TARGET_NAMESPACE": "team-a"})
    assert got == ControllerScope(False, "team-c", False)


def test_namespace_scope_without_target_namespace_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="CLUSTER_SCOPED=false needs TARGET_NAMESPACE"):
        controller_scope(env={"CLUSTER_SCOPED": "false"})


def test_a_boolean_that_does_not_parse_names_the_variable() -> None:
    with pytest.raises(ValueError, match="ENABLE_FILTER_NAMESPACE: 'yes' is not a boolean"):
        controller_scope(env={"ENABLE_FILTER_NAMESPACE": "yes"})


# --- selection -------------------------------------------------------------------------------------


def test_cluster_scoped_scheduler_selects_every_namespace_listed() -> None:
    core = scheduler({})
    obj = in_namespace(
        chaos(spec={"action": "pod-failure", "selector": {"namespaces": ["team-a", "team-b"]}}), "team-a"
    )
    out = core.on_object(event(obj, "ADDED"), T0)
    assert sorted(t for _, _, t in ops(out)) == ["team-a/web-a", "team-b/web-b"]


def test_single_namespace_scheduler_only_targets_its_namespace() -> None:
    core = scheduler(SINGLE)
    obj = in_namespace(chaos(), "team-a")  # no namespaces: all matching pods, i.e. Chaos Mesh's default
    out = core.on_object(event(obj, "ADDED"), T0)
    assert [t for _, _, t in ops(out)] == ["team-a/web-a"]


def test_single_namespace_scheduler_refuses_another_namespace_with_a_status_error() -> None:
    core = scheduler(SINGLE)
    obj = in_namespace(chaos(spec={"action": "pod-failure", "selector": {"namespaces": ["team-b"]}}), "team-a")
    out = core.on_object(event(obj, "ADDED"), T0)
    assert out.commands == []
    [decision] = out.decisions
    assert decision.records is None
    assert decision.selection_error == (
        "spec.selector.namespaces: namespace 'team-b' is out of scope (namespace-scoped mode allows only 'team-a')"
    )
    written = rc.on_decision(obj, decision)
    assert written is not None
    [selected] = [c for c in written["status"]["conditions"] if c["type"] == "Selected"]
    assert selected == {
        "type": "Selected",
        "status": "False",
        "reason": "SelectionFailed",
        "message": decision.selection_error,
    }


def test_experiment_living_outside_the_target_namespace_selects_nothing() -> None:
    core = scheduler(SINGLE)
    out = core.on_object(event(in_namespace(chaos(), "team-b"), "ADDED"), T0)
    assert out.commands == []
    assert "namespace 'team-b' is out of scope" in out.decisions[0].selection_error
