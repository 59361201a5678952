"""Routing in cluster mode (`--cluster-injector`): API-level faults (PodChaos pod-kill and
pod-failure) and Workflow Tasks (run as Pods) go to the cluster injector's fixed node name, and
its dead-man lease holds the faults; everything else still goes to the target pod's node. Without
the flag nothing changes.
"""

from __future__ import annotations

from unit.scheduler.test_core import T0, UID, WEB0, WEB1, chaos, event, feed, make_core, ops, results
from unit.scheduler.wfworld import World, workflow

from chaosbus.common import messages as m
from chaosbus.common import subjects
from chaosbus.scheduler.core import SchedulerCore
from chaosbus.scheduler.flows import task_command

CLUSTER = subjects.CLUSTER_NODE


def cluster_core() -> SchedulerCore:
    core = make_core(WEB0, WEB1)
    core.cluster_injector = True
    return core


def test_pod_failure_goes_to_the_cluster_injector_in_one_command() -> None:
    core = cluster_core()
    out = core.on_object(event(chaos(spec={"action": "pod-failure"}), "ADDED"), T0)
    assert ops(out) == [(CLUSTER, "apply", "default/web-0"), (CLUSTER, "apply", "default/web-1")]
    assert [c.node for c in out.commands] == [CLUSTER]
    assert subjects.cluster_command_subject() == "chaos.cmd._cluster"


def test_the_cluster_injector_lease_holds_pod_failure_and_nodes_hold_nothing() -> None:
    core = cluster_core()
    out = core.on_object(event(chaos(spec={"action": "pod-failure"}), "ADDED"), T0)
    feed(core, results(out.commands), T0 + 0.1)
    leases = {lease.node: lease.held for lease in core.leases(T0 + 1, 15.0, "s")}
    assert leases == {CLUSTER: [UID], "n1": [], "n2": []}


def test_pod_kill_goes_to_the_cluster_injector_and_container_kill_to_the_node() -> None:
    core = cluster_core()
    kill = core.on_object(event(chaos(spec={"action": "pod-kill", "gracePeriod": 5}), "ADDED"), T0)
    assert {c.node for c in kill.commands} == {CLUSTER}
    assert kill.commands[0].actions[0].fault.grace_period == 5  # type: ignore[union-attr]
    ck = core.on_object(
        event(chaos(spec={"action": "container-kill", "containerNames": ["main"]}, uid="u2"), "ADDED"), T0
    )
    assert ops(ck) == [("n1", "apply", "default/web-0/main"), ("n2", "apply", "default/web-1/main")]


def test_a_recover_after_the_pod_vanished_still_goes_to_the_cluster_injector() -> None:
    core = cluster_core()
    out = core.on_object(event(chaos(spec={"action": "pod-failure"}), "ADDED"), T0)
    feed(core, results(out.commands), T0 + 0.1)
    core.on_target("pod.default.web-0", None)
    core.on_target("pod.default.web-1", None)
    gone = core.on_object(event(chaos(spec={"action": "pod-failure"}, deleting=True), "MODIFIED"), T0 + 1)
    assert ops(gone) == [(CLUSTER, "recover", "default/web-0"), (CLUSTER, "recover", "default/web-1")]


def test_without_the_flag_pod_failure_goes_to_the_pods_nodes() -> None:
    core = make_core(WEB0, WEB1)
    out = core.on_object(event(chaos(spec={"action": "pod-failure"}), "ADDED"), T0)
    assert ops(out) == [("n1", "apply", "default/web-0"), ("n2", "apply", "default/web-1")]
    assert CLUSTER not in {lease.node for lease in core.leases(T0 + 1, 15.0, "s")}


def test_a_workflow_task_goes_to_the_cluster_injector_with_what_its_pod_needs() -> None:
    container = {
        "name": "c",
        "image": "busybox",
        "command": ["sh", "-c"],
        "args": ["echo yes"],
        "env": [{"name": "A", "value": "1"}],
    }
    volumes = [{"name": "v", "emptyDir": {}}]
    world = World()
    world.add(
        workflow(
            [
                {
                    "name": "entry",
                    "templateType": "Task",
                    "deadline": "60s",
                    "task": {"container": container, "volumes": volumes},
                }
            ],
            name="wf-task",
        )
    )
    (run,) = world.tasks
    assert cluster_core().task_node() == CLUSTER and make_core(WEB0, WEB1).task_node() == "n1"
    cmd = task_command(run, CLUSTER, T0)
    task = cmd.actions[0].fault
    assert isinstance(task, m.Task) and cmd.node == CLUSTER and cmd.kind == "WorkflowNode"
    assert task.container == container and task.volumes == volumes and task.argv == ["sh", "-c", "echo yes"]
    assert task.workflow == "wf-task" and task.workflow_node_uid == run.uid == cmd.experiment_uid != ""
