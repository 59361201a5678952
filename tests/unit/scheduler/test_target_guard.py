"""The target guard in the scheduler: protected namespaces are never targeted (naming one is a
status error, matching one by labels leaves it out), and network faults leave hostNetwork pods
out unless ALLOW_HOST_NETWORK_TESTING. The settings come from the environment as deployed.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from unit.scheduler.test_core import T0, chaos, event, ops

from chaosbus.common import messages as m
from chaosbus.common.config import TargetGuard, controller_scope, target_guard
from chaosbus.common.crd.selectors import PodSelectorSpec
from chaosbus.recorder import core as rc
from chaosbus.scheduler.app import selection_config
from chaosbus.scheduler.core import SchedulerCore
from chaosbus.scheduler.selection import SelectionConfig, SelectionError, World, select_pods


def target(namespace: str, name: str, *, host_network: bool = False, ip: str = "") -> m.TargetPod:
    return m.TargetPod(
        uid=f"uid-{name}",
        namespace=namespace,
        name=name,
        labels={"app": "web"},
        node="n1",
        phase="Running",
        host_network=host_network,
        pod_ip=ip,
        containers=[m.ContainerRef(name="main", container_id=f"process://{name}")],
    )


COREDNS = target("kube-system", "coredns")
ETCD = target("kube-system", "etcd-n1")
NATS = target("chaosbus", "nats-0")
WEB_A = target("team-a", "web-a", ip="10.0.0.1")
HOSTNET_A = target("team-a", "node-exporter", host_network=True, ip="192.168.1.10")


def scheduler(env: dict[str, str] | None = None, *pods: m.TargetPod) -> SchedulerCore:
    config = selection_config(controller_scope(env=env or {}), target_guard(env=env or {}))
    core = SchedulerCore(config, rng=random.Random(7))
    for pod in pods or (COREDNS, ETCD, NATS, WEB_A, HOSTNET_A):
        core.on_target(f"pod.{pod.namespace}.{pod.name}", pod)
    return core


def in_team_a(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "namespace": "team-a"}}


def refused(core: SchedulerCore, obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The selection error of an experiment that must plan nothing, and the Selected condition written."""
    out = core.on_object(event(obj, "ADDED"), T0)
    assert out.commands == [], "a refused experiment must not send any command"
    [decision] = out.decisions
    assert decision.records is None
    written = rc.on_decision(obj, decision)
    assert written is not None
    [selected] = [c for c in written["status"]["conditions"] if c["type"] == "Selected"]
    assert (selected["status"], selected["reason"]) == ("False", "SelectionFailed")
    return decision.selection_error, selected


# --- settings -------------------------------------------------------------------------------------


def test_default_guard_protects_kube_system_and_chaosbus_and_keeps_host_network_out() -> None:
    assert target_guard(env={}) == TargetGuard(frozenset({"kube-system", "chaosbus"}), False)


def test_protected_namespaces_replace_kube_system_but_never_chaosbus_own_namespace() -> None:
    got = target_guard(env={"PROTECTED_NAMESPACES": " payments, kube-system ,", "POD_NAMESPACE": "chaos"})
    assert got.protected_namespaces == frozenset({"payments", "kube-system", "chaos"})
    assert target_guard(env={"PROTECTED_NAMESPACES": ""}).protected_namespaces == frozenset({"chaosbus"})
    assert target_guard(protected_namespaces="x", env={"PROTECTED_NAMESPACES": "y"}).protected("x")


def test_bad_guard_settings_name_the_variable() -> None:
    with pytest.raises(ValueError, match="PROTECTED_NAMESPACES: 'Kube_System' is not a namespace name"):
        target_guard(env={"PROTECTED_NAMESPACES": "Kube_System"})
    with pytest.raises(ValueError, match="ALLOW_HOST_NETWORK_TESTING: 'maybe' is not a boolean"):
        target_guard(env={"ALLOW_HOST_NETWORK_TESTING": "maybe"})
    assert target_guard(env={"ALLOW_HOST_NETWORK_TESTING": "true"}).allow_host_network_testing


# --- protected namespaces -------------------------------------------------------------------------


def test_team_a_selecting_kube_system_is_refused_in_status_and_plans_nothing() -> None:
    obj = in_team_a(chaos(spec={"action": "pod-kill", "selector": {"namespaces": ["kube-system"]}}))
    error, selected = refused(scheduler(), obj)
    assert error == (
        "spec.selector.namespaces: namespace 'kube-system' is protected: chaosbus never targets "
        "its pods (PROTECTED_NAMESPACES)"
    )
    assert selected["message"] == error


def test_a_protected_namespace_among_others_refuses_the_whole_experiment() -> None:
    obj = in_team_a(chaos(spec={"action": "pod-kill", "selector": {"namespaces": ["team-a", "chaosbus"]}}))
    error, _ = refused(scheduler(), obj)
    assert "namespace 'chaosbus' is protected" in error


def test_the_pods_map_cannot_name_a_protected_pod() -> None:
    obj = in_team_a(chaos(spec={"action": "pod-kill", "selector": {"pods": {"kube-system": ["etcd-n1"]}}}))
    error, _ = refused(scheduler(), obj)
    assert error.startswith("spec.selector.pods: namespace 'kube-system' is protected")


def test_an_experiment_living_in_a_protected_namespace_cannot_target_it_either() -> None:
    obj = {**chaos(spec={"action": "pod-kill"}), "metadata": {**chaos()["metadata"], "namespace": "kube-system"}}
    error, _ = refused(scheduler(), obj)  # no namespaces: defaulted to its own, kube-system
    assert "namespace 'kube-system' is protected" in error


def test_network_chaos_target_side_is_guarded_too() -> None:
    obj = in_team_a(
        chaos(
            "NetworkChaos",
            spec={
                "action": "partition",
                "direction": "both",
                "target": {"mode": "all", "selector": {"namespaces": ["kube-system"]}},
            },
        )
    )
    error, _ = refused(scheduler(), obj)
    assert error.startswith("spec.target.selector.namespaces: namespace 'kube-system' is protected")


def test_namespace_scoped_install_cannot_be_pointed_at_a_protected_namespace() -> None:
    core = scheduler({"CLUSTER_SCOPED": "false", "TARGET_NAMESPACE": "kube-system"})
    obj = {**chaos(spec={"action": "pod-kill"}), "metadata": {**chaos()["metadata"], "namespace": "kube-system"}}
    error, _ = refused(core, obj)
    assert "namespace 'kube-system' is protected" in error


def test_selection_across_all_namespaces_leaves_protected_pods_out() -> None:
    world = World(pods={p.key: p for p in (COREDNS, ETCD, NATS, WEB_A)}, namespaces={}, nodes={})
    everywhere = PodSelectorSpec(label_selectors={"app": "web"})  # no namespaces: every namespace
    got = select_pods(everywhere, "all", "", world, SelectionConfig(), random.Random(1))
    assert [p.key for p in got] == ["team-a/web-a"]
    with pytest.raises(SelectionError, match="kube-system/coredns is in protected namespace kube-system"):
        only_system = PodSelectorSpec(field_selectors={"metadata.namespace": "kube-system"})
        select_pods(only_system, "all", "", world, SelectionConfig(), random.Random(1))


def test_configured_protection_applies_and_unprotected_kube_system_is_a_choice() -> None:
    core = scheduler({"PROTECTED_NAMESPACES": "team-a"})
    error, _ = refused(core, in_team_a(chaos(spec={"action": "pod-kill"})))
    assert "namespace 'team-a' is protected" in error
    core = scheduler({"PROTECTED_NAMESPACES": ""})
    out = core.on_object(
        event(
            in_team_a(
                chaos(
                    spec={
                        "action": "pod-kill",
                        "selector": {"namespaces": ["kube-system"], "fieldSelectors": {"metadata.name": "coredns"}},
                    }
                )
            ),
            "ADDED",
        ),
        T0,
    )
    assert [t for _, _, t in ops(out)] == ["kube-system/coredns"]


# --- hostNetwork pods -----------------------------------------------------------------------------


def partition(**target: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"action": "partition", "direction": "both"}
    if target:
        spec["target"] = {"mode": "all", "selector": target}
    return in_team_a(chaos("NetworkChaos", spec=spec))


def test_network_faults_leave_host_network_pods_out_of_selection() -> None:
    out = scheduler().on_object(event(partition(), "ADDED"), T0)
    assert [t for _, _, t in ops(out)] == ["team-a/web-a"]


def test_a_network_fault_matching_only_host_network_pods_says_why_nothing_is_selected() -> None:
    obj = partition(fieldSelectors={"metadata.name": "node-exporter"})
    error, _ = refused(scheduler(), obj)
    assert error == (
        "spec.target.selector: no pod is selected: every matching pod is refused, e.g. "
        "team-a/node-exporter is on the host network: a network fault would hit its node's own "
        "network (ALLOW_HOST_NETWORK_TESTING is off)"
    )


def test_allow_host_network_testing_lets_network_faults_target_host_network_pods() -> None:
    out = scheduler({"ALLOW_HOST_NETWORK_TESTING": "true"}).on_object(event(partition(), "ADDED"), T0)
    assert sorted(t for _, _, t in ops(out)) == ["team-a/node-exporter", "team-a/web-a"]


def test_pod_faults_still_target_host_network_pods() -> None:
    out = scheduler().on_object(event(in_team_a(chaos(spec={"action": "pod-kill"})), "ADDED"), T0)
    assert sorted(t for _, _, t in ops(out)) == ["team-a/node-exporter", "team-a/web-a"]
