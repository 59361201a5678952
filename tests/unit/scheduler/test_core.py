"""SchedulerCore, driven without NATS: targets, object events, results and ticks in (with an injected
clock and a seeded rng); per-node commands and per-experiment decisions out.
"""

from __future__ import annotations

import random
from typing import Any, Literal

import msgspec
import pytest

from chaosbus.common import messages as m
from chaosbus.common.crd.meta import CLEAN_FINALIZER_ANNOTATION, PAUSE_ANNOTATION, RECORDS_FINALIZER
from chaosbus.scheduler import core as sc
from chaosbus.scheduler.core import INFLIGHT_TIMEOUT_S, SELECTION_RETRY_S, Outputs, SchedulerCore

T0 = 1767323045.0  # 2026-01-02T03:04:05Z, the objects' creationTimestamp
CREATED = "2026-01-02T03:04:05Z"
UID = "u1"


def pod(
    name: str,
    node: str = "n1",
    ip: str = "",
    app: str = "web",
    containers: tuple[str, ...] = ("main",),
    cid_suffix: str = "",
) -> m.TargetPod:
    return m.TargetPod(
        uid=f"uid-{name}",
        namespace="default",
        name=name,
        labels={"app": app},
        node=node,
        pod_ip=ip,
        phase="Running",
        containers=[m.ContainerRef(name=c, container_id=f"process://{name}-{c}{cid_suffix}") for c in containers],
    )


WEB0, WEB1, WEB2 = pod("web-0", "n1", "10.0.0.1"), pod("web-1", "n2", "10.0.0.2"), pod("web-2", "n1", "10.0.0.3")


def chaos(
    kind: str = "PodChaos",
    *,
    spec: dict[str, Any] | None = None,
    finalizers: tuple[str, ...] = (RECORDS_FINALIZER,),
    annotations: dict[str, str] | None = None,
    deleting: bool = False,
    status: dict[str, Any] | None = None,
    uid: str = UID,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "x",
        "namespace": "default",
        "uid": uid,
        "generation": 1,
        "creationTimestamp": CREATED,
        "finalizers": list(finalizers),
    }
    if annotations:
        meta["annotations"] = annotations
    if deleting:
        meta["deletionTimestamp"] = CREATED
    body: dict[str, Any] = {"mode": "all", "selector": {"labelSelectors": {"app": "web"}}}
    body.update(spec if spec is not None else {"action": "pod-failure"})
    obj = {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": kind, "metadata": meta, "spec": body}
    if status is not None:
        obj["status"] = status
    return obj


def event(obj: dict[str, Any], type_: Literal["ADDED", "MODIFIED", "DELETED"] = "MODIFIED") -> m.ObjectEvent:
    md = obj["metadata"]
    return m.ObjectEvent(
        type=type_,
        kind=obj["kind"],
        namespace=md["namespace"],
        name=md["name"],
        uid=md["uid"],
        generation=md.get("generation", 0),
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )


def make_core(*pods: m.TargetPod) -> SchedulerCore:
    core = SchedulerCore(rng=random.Random(7))
    for p in pods or (WEB0, WEB1):
        core.on_target(f"pod.{p.namespace}.{p.name}", p)
    return core


def results(
    cmds: list[m.NodeCommand], *, ok: bool = True, retryable: bool = True, message: str = ""
) -> list[m.ResultBatch]:
    return [
        m.ResultBatch(
            command_id=c.command_id,
            experiment_uid=c.experiment_uid,
            generation=c.generation,
            kind=c.kind,
            namespace=c.namespace,
            name=c.name,
            node=c.node,
            results=[
                m.TargetResult(
                    target_id=a.target_id,
                    selector_key=a.selector_key,
                    op=a.op,
                    ok=ok,
                    retryable=retryable,
                    message=message,
                )
                for a in c.actions
            ],
        )
        for c in cmds
    ]


def feed(core: SchedulerCore, batches: list[m.ResultBatch], now: float) -> Outputs:
    out = Outputs()
    for b in batches:
        out.extend(core.on_results(b, now))
    return out


def ops(out: Outputs) -> list[tuple[str, str, str]]:
    """(node, op, target) of every action, in command order."""
    return [(c.node, a.op, a.target_id) for c in out.commands for a in c.actions]


def started(obj: dict[str, Any] | None = None, *pods: m.TargetPod, now: float = T0) -> tuple[SchedulerCore, Outputs]:
    core = make_core(*pods)
    return core, core.on_object(event(obj or chaos(), "ADDED"), now)


def running(obj: dict[str, Any] | None = None, *pods: m.TargetPod, now: float = T0) -> SchedulerCore:
    """An experiment whose applies all succeeded."""
    core, out = started(obj, *pods, now=now)
    assert out.commands
    feed(core, results(out.commands), now + 0.1)
    return core


def phases(core: SchedulerCore, uid: str = UID) -> dict[str, str]:
    targets = core.experiments[uid].targets
    assert targets is not None
    return {t.target.record_id: t.phase for t in targets}


# --- no finalizer gate -----------------------------------------------------------------------------


@pytest.mark.parametrize("finalizers", [(), ("someone/else",)], ids=["none", "another"])
def test_an_experiment_runs_on_its_first_event_before_the_records_finalizer_is_stored(
    finalizers: tuple[str, ...],
) -> None:
    _, out = started(chaos(finalizers=finalizers))
    assert ops(out) == [("n1", "apply", "default/web-0"), ("n2", "apply", "default/web-1")]


def test_a_deletion_that_beats_the_finalizer_still_recovers_what_was_sent() -> None:
    core, out = started(chaos(finalizers=()))
    assert ops(out) == [("n1", "apply", "default/web-0"), ("n2", "apply", "default/web-1")]
    feed(core, results(out.commands), T0 + 1)
    gone = core.on_object(event(chaos(deleting=True, finalizers=()), "DELETED"), T0 + 2)
    assert ops(gone) == [("n1", "recover", "default/web-0"), ("n2", "recover", "default/web-1")]


# --- selection and commands --------------------------------------------------------------------------


def test_one_command_per_node_with_that_nodes_actions() -> None:
    _, out = started(chaos(), WEB0, WEB1, WEB2)
    assert [(c.node, [a.target_id for a in c.actions]) for c in out.commands] == [
        ("n1", ["default/web-0", "default/web-2"]),
        ("n2", ["default/web-1"]),
    ]


def test_command_carries_the_experiment_and_the_target() -> None:
    _, out = started(chaos(spec={"action": "pod-failure", "duration": "60s"}), WEB0)
    [cmd] = out.commands
    assert (
        cmd.experiment_uid,
        cmd.generation,
        cmd.kind,
        cmd.namespace,
        cmd.name,
        cmd.node,
        cmd.issued_at,
        cmd.deadline,
    ) == (UID, 1, "PodChaos", "default", "x", "n1", T0, T0 + 60)
    [action] = cmd.actions
    assert action == m.TargetAction(
        target_id="default/web-0",
        selector_key=".",
        op="apply",
        pod_uid="uid-web-0",
        namespace="default",
        pod_name="web-0",
        container_ids=["process://web-0-main"],
        fault=m.PodFailure(),
    )


def test_command_ids_are_unique_and_name_the_experiment() -> None:
    _, out = started(chaos(), WEB0, WEB1)
    ids = [c.command_id for c in out.commands]
    assert len(set(ids)) == 2 and all(i.startswith(f"{UID}.") for i in ids)


def test_one_shot_command_has_no_deadline() -> None:
    _, out = started(chaos(spec={"action": "pod-kill", "duration": "60s"}), WEB0)
    assert out.commands[0].deadline is None and out.commands[0].actions[0].fault == m.PodKill()


def test_selection_decision_lists_the_records() -> None:
    _, out = started()
    [d] = out.decisions
    assert (d.experiment_uid, d.desired_phase, d.selection_error, d.paused, d.deleting, d.at) == (
        UID,
        "Run",
        "",
        False,
        False,
        T0,
    )
    # each record names the node whose results may change it
    assert d.records == [m.RecordRef(id="default/web-0", node="n1"), m.RecordRef(id="default/web-1", node="n2")]


def test_container_kill_targets_containers() -> None:
    side = pod("side-0", "n3", containers=("app", "proxy"))
    obj = chaos(spec={"action": "container-kill", "containerNames": ["proxy"]})
    _, out = started(obj, side)
    [action] = out.commands[0].actions
    assert (action.target_id, action.container_ids, action.fault) == (
        "default/side-0/proxy",
        ["process://side-0-proxy"],
        m.ContainerKill(container_names=["proxy"]),
    )


def test_network_partition_commands_for_both_sides() -> None:
    db = pod("db-0", "n9", "10.0.1.1", app="db")
    obj = chaos(
        "NetworkChaos",
        spec={
            "action": "partition",
            "direction": "to",
            "target": {"mode": "all", "selector": {"labelSelectors": {"app": "db"}}},
        },
    )
    _, out = started(obj, WEB0, db)
    by_target = {(a.target_id, a.selector_key): a.fault for c in out.commands for a in c.actions}
    assert by_target == {
        ("default/web-0", "."): m.Partition(rules=[m.PartitionRule(chain="output", peers=["10.0.1.1"])]),
        ("default/db-0", ".Target"): m.Partition(rules=[m.PartitionRule(chain="input", peers=["10.0.0.1"])]),
    }


def test_identical_event_produces_no_new_decision() -> None:
    core, _ = started()
    out = core.on_object(event(chaos()), T0 + 1)
    assert (out.commands, out.decisions) == ([], [])


def test_undecodable_object_is_reported_as_an_error() -> None:
    core = make_core()
    bad = chaos(spec={"action": "explode"})
    out = core.on_object(event(bad), T0)
    assert out.errors == ["PodChaos/default/x: spec.action: expected one of pod-kill, pod-failure, container-kill"]
    assert core.experiments == {}


def test_deleted_event_for_an_unknown_experiment_is_ignored() -> None:
    core = make_core()
    out = core.on_object(event(chaos(), "DELETED"), T0)
    assert (out.commands, out.decisions, core.experiments) == ([], [], {})


# --- results -------------------------------------------------------------------------------------


def test_successful_results_mark_targets_injected() -> None:
    core = running()
    assert phases(core) == {"default/web-0": "Injected", "default/web-1": "Injected"}
    assert core.phase_counts(T0 + 1) == {("default", "PodChaos", "running"): 1}


def test_partial_results_mark_only_their_targets() -> None:
    core, out = started()
    feed(core, results([c for c in out.commands if c.node == "n2"]), T0 + 0.1)
    assert phases(core) == {"default/web-0": "Not Injected", "default/web-1": "Injected"}


def test_result_for_another_op_is_ignored() -> None:
    core, out = started()
    stale = [
        msgspec.structs.replace(b, results=[msgspec.structs.replace(r, op="recover") for r in b.results])
        for b in results(out.commands)
    ]
    feed(core, stale, T0 + 0.1)
    assert set(phases(core).values()) == {"Not Injected"}


def test_results_for_an_unknown_experiment_are_ignored() -> None:
    core, out = started()
    foreign = [msgspec.structs.replace(b, experiment_uid="other") for b in results(out.commands)]
    assert feed(core, foreign, T0 + 0.1).commands == []
    assert set(phases(core).values()) == {"Not Injected"}


def test_injected_targets_get_no_more_commands() -> None:
    assert running().tick(T0 + 1000).commands == []


# --- duration, pause -----------------------------------------------------------------------------


def test_duration_expiry_at_tick_recovers() -> None:
    core = running(chaos(spec={"action": "pod-failure", "duration": "60s"}))
    assert core.tick(T0 + 59.9).commands == []
    out = core.tick(T0 + 60)
    assert ops(out) == [("n1", "recover", "default/web-0"), ("n2", "recover", "default/web-1")]
    assert [d.desired_phase for d in out.decisions] == ["Stop"]


def test_recovered_after_duration_is_finished() -> None:
    core = running(chaos(spec={"action": "pod-failure", "duration": "60s"}))
    feed(core, results(core.tick(T0 + 60).commands), T0 + 60.1)
    assert core.tick(T0 + 120).commands == []
    assert core.phase_counts(T0 + 120) == {("default", "PodChaos", "finished"): 1}


def test_pause_recovers_and_unpause_applies_again() -> None:
    core = running()
    out = core.on_object(event(chaos(annotations={PAUSE_ANNOTATION: "true"})), T0 + 5)
    assert [op for _, op, _ in ops(out)] == ["recover", "recover"]
    assert [(d.desired_phase, d.paused) for d in out.decisions] == [("Stop", True)]
    feed(core, results(out.commands), T0 + 5.1)
    out = core.on_object(event(chaos()), T0 + 10)
    assert [op for _, op, _ in ops(out)] == ["apply", "apply"]
    assert [(d.desired_phase, d.paused) for d in out.decisions] == [("Run", False)]


@pytest.mark.parametrize("value", ["false", "True", "yes", ""])
def test_only_literal_true_pauses(value: str) -> None:
    core = running()
    out = core.on_object(event(chaos(annotations={PAUSE_ANNOTATION: value})), T0 + 5)
    assert out.commands == []


def test_paused_from_the_start_selects_nothing() -> None:
    _, out = started(chaos(annotations={PAUSE_ANNOTATION: "true"}))
    assert out.commands == []
    assert [(d.desired_phase, d.records) for d in out.decisions] == [("Stop", None)]


def test_unpause_after_duration_does_not_apply_again() -> None:
    obj = chaos(spec={"action": "pod-failure", "duration": "60s"})
    core = running(obj)
    paused = chaos(spec={"action": "pod-failure", "duration": "60s"}, annotations={PAUSE_ANNOTATION: "true"})
    feed(core, results(core.on_object(event(paused), T0 + 5).commands), T0 + 5.1)
    assert core.on_object(event(obj), T0 + 61).commands == []


# --- one-shot ------------------------------------------------------------------------------------


@pytest.mark.parametrize("annotations", [{PAUSE_ANNOTATION: "true"}, None])
def test_one_shot_never_recovers_on_pause_or_time_and_never_reapplies(annotations: dict[str, str] | None) -> None:
    spec = {"action": "pod-kill", "duration": "10s"}
    core = running(chaos(spec=spec))
    out = core.on_object(event(chaos(spec=spec, annotations=annotations)), T0 + 5)
    out.extend(core.tick(T0 + 3600))
    assert out.commands == []
    assert all(d.desired_phase == "Run" for d in out.decisions)


def test_one_shot_restarted_pod_is_not_killed_again() -> None:
    core = running(chaos(spec={"action": "pod-kill"}), WEB0)
    core.on_target(
        "pod.default.web-0",
        m.TargetPod(uid="uid-new", namespace="default", name="web-0", node="n1", labels={"app": "web"}),
    )
    assert core.tick(T0 + 100).commands == []


# --- deletion ------------------------------------------------------------------------------------


def test_deletion_recovers_then_the_experiment_is_forgotten() -> None:
    core = running()
    out = core.on_object(event(chaos(deleting=True)), T0 + 5)
    assert [op for _, op, _ in ops(out)] == ["recover", "recover"]
    assert [(d.desired_phase, d.deleting) for d in out.decisions] == [("Stop", True)]
    feed(core, results(out.commands), T0 + 5.1)
    assert UID in core.experiments  # the object still exists until the recorder drops the finalizer
    core.on_object(event(chaos(deleting=True, finalizers=()), "DELETED"), T0 + 6)
    assert UID not in core.experiments


def test_deletion_without_finalizer_still_recovers() -> None:
    """Once deleting, the gate is open: a deletion can never skip recovery."""
    core = running()
    out = core.on_object(event(chaos(deleting=True, finalizers=())), T0 + 5)
    assert [op for _, op, _ in ops(out)] == ["recover", "recover"]


def test_forced_removal_recovers_before_forgetting() -> None:
    """The object vanished while targets were injected (cleanFinalizer: forced): recover anyway."""
    core = running()
    gone = chaos(deleting=True, annotations={CLEAN_FINALIZER_ANNOTATION: "forced"}, finalizers=())
    out = core.on_object(event(gone, "DELETED"), T0 + 5)
    assert [op for _, op, _ in ops(out)] == ["recover", "recover"]
    assert UID in core.experiments
    feed(core, results(out.commands), T0 + 5.1)
    assert UID not in core.experiments


def test_deleted_before_selection_is_forgotten_at_once() -> None:
    nobody = {"action": "pod-kill", "mode": "all", "selector": {"labelSelectors": {"app": "nobody"}}}
    core, out = started(chaos(spec=nobody))
    assert out.commands == [] and core.experiments[UID].targets is None
    core.on_object(event(chaos(spec=nobody, finalizers=()), "DELETED"), T0 + 1)
    assert UID not in core.experiments


def test_recover_uses_the_live_container_ids() -> None:
    core = running(chaos(), WEB0)
    core.on_target("pod.default.web-0", pod("web-0", "n1", "10.0.0.1", cid_suffix="-restarted"))
    out = core.on_object(event(chaos(deleting=True)), T0 + 5)
    assert out.commands[0].actions[0].container_ids == ["process://web-0-main-restarted"]


# --- failures and retries ------------------------------------------------------------------------


def test_retryable_failure_is_retried_after_backoff_not_before() -> None:
    core, out = started(chaos(), WEB0)
    feed(core, results(out.commands, ok=False, message="busy"), T0 + 1)
    assert core.tick(T0 + 1.99).commands == []
    assert ops(core.tick(T0 + 2)) == [("n1", "apply", "default/web-0")]


def test_backoff_doubles_with_each_failure() -> None:
    core, out = started(chaos(), WEB0)
    feed(core, results(out.commands, ok=False), T0 + 1)
    out = core.tick(T0 + 2)
    feed(core, results(out.commands, ok=False), T0 + 3)
    assert core.tick(T0 + 4.99).commands == []
    assert len(core.tick(T0 + 5).commands) == 1


def test_backoff_is_capped() -> None:
    core, out = started(chaos(), WEB0)
    now = T0
    for _ in range(10):
        feed(core, results(out.commands, ok=False), now)
        now += sc.MAX_BACKOFF_S
        out = core.tick(now)
        assert len(out.commands) == 1


def test_non_retryable_apply_failure_is_not_retried() -> None:
    core, out = started(chaos(), WEB0)
    feed(core, results(out.commands, ok=False, retryable=False, message="unsupported"), T0 + 1)
    assert core.tick(T0 + 3600).commands == []


def test_non_retryable_failure_leaves_nothing_to_recover() -> None:
    core, out = started(chaos(), WEB0)
    feed(core, results(out.commands, ok=False, retryable=False), T0 + 1)
    assert core.on_object(event(chaos(deleting=True)), T0 + 2).commands == []
    core.on_object(event(chaos(deleting=True, finalizers=()), "DELETED"), T0 + 3)
    assert UID not in core.experiments


def test_failed_recover_is_retried() -> None:
    core = running(chaos(), WEB0)
    out = core.on_object(event(chaos(deleting=True)), T0 + 5)
    feed(core, results(out.commands, ok=False, retryable=False), T0 + 6)
    assert ops(core.tick(T0 + 7)) == [("n1", "recover", "default/web-0")]


def test_inflight_ops_are_not_resent_until_timeout() -> None:
    core, first = started(chaos(), WEB0)
    assert core.tick(T0 + INFLIGHT_TIMEOUT_S - 0.01).commands == []
    again = core.tick(T0 + INFLIGHT_TIMEOUT_S)
    assert ops(again) == ops(first)
    assert again.commands[0].command_id != first.commands[0].command_id


def test_late_result_of_a_resent_op_still_counts() -> None:
    core, first = started(chaos(), WEB0)
    core.tick(T0 + INFLIGHT_TIMEOUT_S)
    feed(core, results(first.commands), T0 + INFLIGHT_TIMEOUT_S + 1)
    assert phases(core) == {"default/web-0": "Injected"}


# --- selection errors ----------------------------------------------------------------------------


def test_selection_error_is_decided_and_retried_after_the_retry_interval() -> None:
    core = make_core(pod("db-0", app="db"))
    out = core.on_object(event(chaos()), T0)
    [d] = out.decisions
    assert d.records is None and d.selection_error.startswith("spec.selector: no pod is selected")
    assert out.commands == []
    core.on_target("pod.default.web-0", WEB0)
    assert core.tick(T0 + SELECTION_RETRY_S - 0.01).commands == []
    out = core.tick(T0 + SELECTION_RETRY_S)
    assert ops(out) == [("n1", "apply", "default/web-0")]
    assert [(d.selection_error, d.records) for d in out.decisions] == [
        ("", [m.RecordRef(id="default/web-0", node="n1")])
    ]


def test_unchanged_selection_error_is_not_decided_twice() -> None:
    core = make_core(pod("db-0", app="db"))
    core.on_object(event(chaos()), T0)
    assert core.tick(T0 + SELECTION_RETRY_S).decisions == []


@pytest.mark.parametrize("key", ["service.default.web", "weird", "Pod.default.web-0"])
def test_unknown_target_keys_are_ignored(key: str) -> None:
    core = make_core(WEB0)
    core.on_target(key, None)
    core.on_target(key, m.TargetNode(name="x"))
    assert (core.pods, core.namespaces, core.nodes) == ({"default/web-0": WEB0}, {}, {})


@pytest.mark.parametrize(
    ("key", "value", "table", "name"),
    [
        ("pod.default.web.1", pod("web.1"), "pods", "default/web.1"),
        ("namespace.prod", m.TargetNamespace(name="prod"), "namespaces", "prod"),
        ("node.n1.example.com", m.TargetNode(name="n1.example.com"), "nodes", "n1.example.com"),
    ],
)
def test_target_keys_map_to_selection_keys(key: str, value: m.Message, table: str, name: str) -> None:
    core = SchedulerCore()
    core.on_target(key, value)
    assert getattr(core, table) == {name: value}
    core.on_target(key, None)
    assert getattr(core, table) == {}


def test_removed_target_pod_is_forgotten() -> None:
    core = make_core(WEB0)
    core.on_target("pod.default.web-0", None)
    out = core.on_object(event(chaos()), T0)
    assert out.commands == [] and out.decisions[0].selection_error


# --- resuming after a restart --------------------------------------------------------------------


def status(*records: tuple[str, str], key: str = ".") -> dict[str, Any]:
    return {
        "experiment": {
            "desiredPhase": "Run",
            "containerRecords": [
                {"id": rid, "selectorKey": key, "phase": ph, "injectedCount": 0, "recoveredCount": 0}
                for rid, ph in records
            ],
        }
    }


def test_resume_does_not_reselect() -> None:
    obj = chaos(status=status(("default/web-0", "Injected")))
    _, out = started(obj, WEB0, WEB1)
    assert out.commands == []
    assert [d.records for d in out.decisions] == [[m.RecordRef(id="default/web-0", node="n1")]]


def test_resume_applies_records_that_are_not_injected() -> None:
    obj = chaos(status=status(("default/web-0", "Injected"), ("default/web-1", "Not Injected")))
    _, out = started(obj, WEB0, WEB1)
    assert ops(out) == [("n2", "apply", "default/web-1")]


@pytest.mark.parametrize(("phase", "expected"), [("Injected/Wait", ["recover"]), ("Not Injected/Wait", [])])
def test_resume_wait_phases_count_by_their_prefix(phase: str, expected: list[str]) -> None:
    obj = chaos(deleting=True, status=status(("default/web-0", phase)))
    _, out = started(obj, WEB0)
    assert [op for _, op, _ in ops(out)] == expected


def test_resume_container_records_keep_their_container() -> None:
    side = pod("side-0", "n3", containers=("app", "proxy"))
    obj = chaos(
        spec={"action": "container-kill", "containerNames": ["proxy"]},
        deleting=True,
        status=status(("default/side-0/proxy", "Injected")),
    )
    _, out = started(obj, side)
    [action] = out.commands[0].actions
    assert (action.op, action.container_ids) == ("recover", ["process://side-0-proxy"])


def test_resumed_record_of_a_vanished_pod_is_never_sent_to_no_node() -> None:
    obj = chaos(deleting=True, status=status(("default/web-0", "Injected")))
    _, out = started(obj, WEB1)
    assert all(c.node for c in out.commands)


# --- wakeups -------------------------------------------------------------------------------------


def test_next_wakeup_is_the_duration_end() -> None:
    core = running(chaos(spec={"action": "pod-failure", "duration": "60s"}))
    assert core.next_wakeup(T0 + 1) == T0 + 60


def test_next_wakeup_none_when_nothing_is_pending() -> None:
    assert running().next_wakeup(T0 + 1) is None


def test_next_wakeup_includes_inflight_timeout() -> None:
    core, _ = started(chaos(spec={"action": "pod-failure", "duration": "1h"}))
    assert core.next_wakeup(T0 + 1) == T0 + INFLIGHT_TIMEOUT_S


def test_next_wakeup_includes_retry_time() -> None:
    core, out = started(chaos(), WEB0)
    feed(core, results(out.commands, ok=False), T0 + 1)
    assert core.next_wakeup(T0 + 1) == T0 + 2


def test_next_wakeup_includes_selection_retry() -> None:
    core = make_core(pod("db-0", app="db"))
    core.on_object(event(chaos()), T0)
    assert core.next_wakeup(T0 + 1) == T0 + SELECTION_RETRY_S


def _selection_failed_then_paused() -> tuple[SchedulerCore, float]:
    core = make_core(pod("db-0", app="db"))
    core.on_object(event(chaos()), T0)
    now = T0 + 1
    core.on_object(event(chaos(annotations={PAUSE_ANNOTATION: "true"})), now)
    return core, now + SELECTION_RETRY_S


def _selection_failed_then_expired() -> tuple[SchedulerCore, float]:
    core = make_core(pod("db-0", app="db"))
    core.on_object(event(chaos(spec={"action": "pod-failure", "duration": "3s"})), T0)
    return core, T0 + SELECTION_RETRY_S + 1


def _apply_lost_then_paused() -> tuple[SchedulerCore, float]:
    core, _ = started(chaos(), WEB0)
    core.on_object(event(chaos(annotations={PAUSE_ANNOTATION: "true"})), T0 + 1)
    return core, T0 + INFLIGHT_TIMEOUT_S + 1


@pytest.mark.parametrize(
    "scenario", [_selection_failed_then_paused, _selection_failed_then_expired, _apply_lost_then_paused]
)
def test_next_wakeup_is_never_in_the_past(scenario: Any) -> None:
    """A past wakeup makes the app's timer loop spin without awaiting, freezing the event loop."""
    core, now = scenario()
    core.tick(now)
    wake = core.next_wakeup(now)
    assert wake is None or wake > now


def test_a_lost_apply_result_does_not_keep_a_deleted_experiment_forever() -> None:
    core, out = started()
    assert out.commands  # applies sent; their results never come
    core.on_object(event(chaos(), "DELETED"), T0 + 1)
    out = core.tick(T0 + INFLIGHT_TIMEOUT_S + 1)
    assert sorted(ops(out)) == [("n1", "recover", "default/web-0"), ("n2", "recover", "default/web-1")]
    feed(core, results(out.commands), T0 + INFLIGHT_TIMEOUT_S + 2)
    core.tick(T0 + INFLIGHT_TIMEOUT_S + 3)
    assert UID not in core.experiments


def test_recover_of_a_vanished_pod_goes_to_every_known_node() -> None:
    obj = chaos(deleting=True, status=status(("default/gone-0", "Injected")))
    _, out = started(obj, WEB0, WEB1)
    assert sorted(node for node, op, target in ops(out) if target == "default/gone-0") == ["n1", "n2"]
