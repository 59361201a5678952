"""The Workflow state machine through the Orchestrator, with an injected clock and an in-memory
world standing in for the recorder and the chaos kinds: each template type, deadline propagation,
abort by StatusCheck, rejection of a chaos step that could never end, and a restart mid-run.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from unit.scheduler.wfworld import T0, World, conds, injected, partition, pod_kill, workflow

from chaosbus.common import messages as m
from chaosbus.common.objects import parse_rfc3339
from chaosbus.scheduler import wfspec
from chaosbus.scheduler.orchestrator import Orchestrator

SERIAL = {"name": "entry", "templateType": "Serial", "deadline": "60s", "children": ["cut", "wait", "kill", "cut2"]}
SERIAL_TEMPLATES = [
    SERIAL,
    partition("cut", "5s"),
    {"name": "wait", "templateType": "Suspend", "deadline": "3s"},
    pod_kill("kill"),
    partition("cut2", "5s"),
]


def test_serial_runs_steps_in_order_and_accomplishes() -> None:
    world = World()
    world.add(workflow(SERIAL_TEMPLATES))
    cut = world.node("cut")
    chaos = world.of_kind("NetworkChaos")
    assert [c["metadata"]["name"] for c in chaos] == [cut["status"]["chaosResource"]["name"]]
    labels = chaos[0]["metadata"]["labels"]
    assert labels == {"chaos-mesh.org/workflow": "wf", "chaos-mesh.org/controlled-by": cut["metadata"]["name"]}
    assert chaos[0]["metadata"]["ownerReferences"][0]["uid"] == cut["metadata"]["uid"]
    assert conds(cut)["ChaosInjected"] == "True" and not world.of_kind("PodChaos")
    entry = world.node("entry")
    assert entry["status"]["activeChildren"] == [{"name": cut["metadata"]["name"]}]
    assert world.wf_status()["entryNode"] == entry["metadata"]["name"]

    world.advance(T0 + 5)  # the partition's deadline: its chaos object is deleted, the suspend starts
    assert not world.of_kind("NetworkChaos") and conds(world.node("cut"))["DeadlineExceed"] == "True"
    assert conds(world.node("wait")) == {"Accomplished": "False", "DeadlineExceed": "False"}
    world.advance(T0 + 8)
    kill = world.node("kill")
    (pk,) = world.of_kind("PodChaos")
    assert not [n for n in world.of_kind("WorkflowNode") if n["spec"]["templateName"] == "cut2"]
    world.set_status("PodChaos", pk["metadata"]["name"], injected(2))  # the one-shot fault is done
    assert conds(world.node("kill"))["Accomplished"] == "True" and not world.of_kind("PodChaos")
    assert kill["metadata"]["name"] in [c["name"] for c in world.node("entry")["status"]["finishedChildren"]]
    assert len(world.of_kind("NetworkChaos")) == 1
    world.advance(T0 + 14)
    assert conds(world.node("entry"))["Accomplished"] == "True"
    status = world.wf_status()
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Scheduled": "True", "Accomplished": "True"}
    assert status["endTime"] == "2026-01-02T03:04:18Z"
    assert len(world.creates()) == len(set(world.creates()))


def test_parallel_starts_every_branch_at_once() -> None:
    world = World()
    world.add(
        workflow(
            [
                {"name": "entry", "templateType": "Parallel", "children": ["a", "b", "k"]},
                partition("a", "4s"),
                partition("b", "6s"),
                pod_kill("k", "10s"),
            ]
        )
    )
    assert len(world.of_kind("NetworkChaos")) == 2 and len(world.of_kind("PodChaos")) == 1
    assert len(world.node("entry")["status"]["activeChildren"]) == 3
    world.advance(T0 + 4)
    assert len(world.of_kind("NetworkChaos")) == 1
    world.advance(T0 + 6)
    assert not conds(world.node("entry"))["Accomplished"] == "True"  # the pod-kill has not injected yet
    world.advance(T0 + 10)  # the pod-kill step reaches its deadline instead
    assert conds(world.node("k"))["DeadlineExceed"] == "True"
    assert conds(world.node("entry"))["Accomplished"] == "True"


def test_deadline_propagates_a_child_never_outlives_its_parent() -> None:
    world = World()
    world.add(
        workflow(
            [
                {"name": "entry", "templateType": "Serial", "deadline": "4s", "children": ["long"]},
                partition("long", "30s"),
            ]
        )
    )
    long = world.node("long")
    assert parse_rfc3339(long["spec"]["deadline"]) == parse_rfc3339(world.node("entry")["spec"]["deadline"])
    world.advance(T0 + 4)
    reasons = {c["type"]: c.get("reason") for c in world.node("long")["status"]["conditions"] if c["status"] == "True"}
    assert reasons["DeadlineExceed"] == "ParentNodeDeadlineExceed"
    assert conds(world.node("entry"))["DeadlineExceed"] == "True" and not world.of_kind("NetworkChaos")
    assert {c["type"]: c["status"] for c in world.wf_status()["conditions"]}["Accomplished"] == "True"


def check_template(abort: bool = True, mode: str = "Continuous") -> dict[str, Any]:
    return {
        "name": "probe",
        "templateType": "StatusCheck",
        "deadline": "30s",
        "abortWithStatusCheck": abort,
        "statusCheck": {
            "mode": mode,
            "type": "HTTP",
            "intervalSeconds": 1,
            "failureThreshold": 2,
            "http": {"url": "http://127.0.0.1:9/", "criteria": {"statusCode": "200"}},
        },
    }


def test_failing_status_check_aborts_and_every_fault_is_deleted() -> None:
    world = World()
    world.add(
        workflow(
            [
                {"name": "entry", "templateType": "Parallel", "children": ["probe", "cut", "later"]},
                check_template(),
                partition("cut", "30s"),
                {"name": "later", "templateType": "Serial", "children": ["wait", "cut2"]},
                {"name": "wait", "templateType": "Suspend", "deadline": "20s"},
                partition("cut2", "5s"),
            ]
        )
    )
    assert len(world.of_kind("NetworkChaos")) == 1 and len(world.of_kind("StatusCheck")) == 1
    world.probe_ok = lambda: False
    world.advance(T0 + 1)
    wf_obj = world.objects[("Workflow", "default", "wf")]
    assert wf_obj["metadata"]["annotations"]["workflow.chaos-mesh.org/abort"] == "true"
    assert not world.of_kind("NetworkChaos")
    assert conds(world.node("probe"))["Aborted"] == "True"
    # Chaos Mesh's shape: the check step is both Accomplished (its check completed) and Aborted.
    reasons = {c["type"]: c.get("reason") for c in world.node("probe")["status"]["conditions"] if c["status"] == "True"}
    assert reasons == {"Accomplished": "StatusCheckCompleted", "Aborted": "StatusCheckNotExceedSuccessThreshold"}
    assert conds(world.node("cut"))["Aborted"] == "True" and conds(world.node("wait"))["Aborted"] == "True"
    assert {c["type"]: c["status"] for c in world.wf_status()["conditions"]}["Aborted"] == "True"
    world.advance(T0 + 40)
    assert not [n for n in world.of_kind("WorkflowNode") if n["spec"]["templateName"] == "cut2"]


def test_passing_synchronous_check_accomplishes_without_abort() -> None:
    world = World()
    world.add(
        workflow(
            [{"name": "entry", "templateType": "Serial", "children": ["probe"]}, check_template(mode="Synchronous")]
        )
    )
    (req,) = world.orch.due_probes(world.now)
    world.apply(world.orch.on_probe(req, ok=True, now=world.now).writes)
    assert conds(world.node("probe"))["Accomplished"] == "True"
    assert "annotations" not in world.objects[("Workflow", "default", "wf")]["metadata"]
    assert world.of_kind("StatusCheck")  # kept as the record of the check


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (partition("x", "5s") | {"deadline": None}, "a NetworkChaos step needs a deadline"),
        ({"name": "x", "templateType": "Suspend"}, "a Suspend template needs a deadline"),
        (
            {"name": "x", "templateType": "Schedule", "schedule": {"schedule": "@every 1s", "type": "PodChaos"}},
            "a Schedule step needs a deadline",
        ),
        ({"name": "x", "templateType": "Serial", "children": ["nope"]}, "'nope' names no template"),
        ({"name": "x", "templateType": "Serial", "children": ["x"]}, "x -> x is a cycle"),
        ({"name": "x", "templateType": "Dance"}, "templateType: 'Dance'"),
        (pod_kill("x") | {"podChaos": {"action": "pod-kill", "mode": "sometimes"}}, "spec.mode"),
    ],
)
def test_invalid_workflow_is_rejected_in_status_and_nothing_runs(template: dict[str, Any], message: str) -> None:
    world = World()
    body = {k: v for k, v in template.items() if v is not None}
    world.add(workflow([{"name": "entry", "templateType": "Serial", "children": ["x"]}, body]))
    (scheduled,) = [c for c in world.wf_status()["conditions"] if c["type"] == "Scheduled"]
    assert scheduled["status"] == "False" and scheduled["reason"] == "InvalidSpec"
    assert (
        message in scheduled["message"]
        and "spec.templates[1] (x)" in scheduled["message"]
        or message in scheduled["message"]
    )
    assert not world.of_kind("WorkflowNode")


def test_one_shot_step_without_deadline_is_allowed_and_ends_when_injected() -> None:
    world = World()
    world.add(workflow([{"name": "entry", "templateType": "Serial", "children": ["k"]}, pod_kill("k")]))
    (pk,) = world.of_kind("PodChaos")
    world.set_status("PodChaos", pk["metadata"]["name"], injected())
    assert {c["type"]: c["status"] for c in world.wf_status()["conditions"]}["Accomplished"] == "True"


def test_deleting_the_workflow_deletes_its_nodes_and_faults() -> None:
    world = World()
    world.add(workflow(SERIAL_TEMPLATES))
    wf_obj = world.objects.pop(("Workflow", "default", "wf"))
    world.deliver(world.event(wf_obj, "DELETED"))
    assert not world.of_kind("NetworkChaos") and not world.of_kind("WorkflowNode")


def test_restart_mid_workflow_creates_nothing_twice_and_completes() -> None:
    world = World()
    world.add(workflow(SERIAL_TEMPLATES))
    world.advance(T0 + 6)
    before = set(world.creates())
    world.orch = Orchestrator()  # a new scheduler: replays every object, then starts
    for obj in list(world.objects.values()):
        world.orch.on_object(world.event(obj, "MODIFIED"), world.now)
    world.apply(world.orch.start(world.now).writes)
    world.advance(T0 + 8)
    (pk,) = world.of_kind("PodChaos")
    world.set_status("PodChaos", pk["metadata"]["name"], injected())
    world.advance(T0 + 20)
    assert {c["type"]: c["status"] for c in world.wf_status()["conditions"]}["Accomplished"] == "True"
    creates = world.creates()
    assert len(creates) == len(set(creates)), "an object was asked for twice"
    assert before <= set(creates)


def test_node_names_are_deterministic_and_chaos_mesh_shaped() -> None:
    name = wfspec.node_name("uid-1", "wf", "network-delay", 0)
    assert name == wfspec.node_name("uid-1", "wf", "network-delay", 0)
    assert name.startswith("network-delay-") and len(name) == len("network-delay-") + 5
    assert name != wfspec.node_name("uid-1", "wf", "network-delay", 1)


def task_workflow(expressions: list[tuple[str, str]]) -> dict[str, Any]:
    return workflow(
        [
            {
                "name": "entry",
                "templateType": "Task",
                "deadline": "60s",
                "task": {"container": {"name": "c", "image": "busybox", "command": ["sh", "-c"], "args": ["echo yes"]}},
                "conditionalBranches": [{"target": target, "expression": expr} for target, expr in expressions],
            },
            partition("cut", "5s"),
            {"name": "wait", "templateType": "Suspend", "deadline": "2s"},
        ]
    )


def test_task_runs_once_then_only_true_branches_start() -> None:
    world = World()
    world.add(task_workflow([("cut", 'stdout == "yes"'), ("wait", "exitCode != 0"), ("wait", "exitCode ==")]))
    (run,) = world.tasks
    assert run.argv == ("sh", "-c", "echo yes") and 55 <= run.timeout_s <= 60
    world.advance(T0 + 1)
    assert len(world.tasks) == 1, "the command was asked for twice"
    entry = world.node("entry")
    result = m.TargetResult(target_id=f"default/{run.node}", op="apply", ok=True, exit_code=0, stdout="yes\n")
    world.take(world.orch.on_task_result("default", entry["metadata"]["name"], result, world.now))
    cbs = world.node("entry")["status"]["conditionalBranchesStatus"]
    assert json.loads(cbs["context"][0]) == {"exitCode": 0, "stdout": "yes\n"}
    assert [b["evaluationResult"] for b in cbs["branches"]] == ["True", "False", "Unknown"]
    assert "unexpected" in cbs["branches"][2]["message"]
    assert len(world.of_kind("NetworkChaos")) == 1 and not [
        n for n in world.of_kind("WorkflowNode") if n["spec"]["templateName"] == "wait"
    ]
    world.advance(T0 + 6)
    assert conds(world.node("entry"))["Accomplished"] == "True" and not world.of_kind("NetworkChaos")


def test_a_repeated_task_command_answered_already_done_is_not_taken_as_the_result() -> None:
    world = World()
    world.add(task_workflow([("cut", "exitCode == 0")]))
    (run,) = world.tasks
    again = m.TargetResult(target_id="x", op="apply", ok=True, message="already done on this node at 05:00:00Z")
    world.take(world.orch.on_task_result("default", run.node, again, world.now))
    assert "conditionalBranchesStatus" not in world.node("entry")["status"]
    first = m.TargetResult(target_id="x", op="apply", ok=True, exit_code=0, stdout="")
    world.take(world.orch.on_task_result("default", run.node, first, world.now))
    assert world.node("entry")["status"]["conditionalBranchesStatus"]["branches"][0]["evaluationResult"] == "True"


def test_task_that_could_not_run_takes_no_branch() -> None:
    world = World()
    world.add(task_workflow([("cut", "exitCode == 0"), ("wait", "exitCode != 0")]))
    (run,) = world.tasks
    failed = m.TargetResult(target_id="x", op="apply", ok=False, message="task 'sh' could not start")
    world.take(world.orch.on_task_result("default", run.node, failed, world.now))
    branches = world.node("entry")["status"]["conditionalBranchesStatus"]["branches"]
    assert [b["evaluationResult"] for b in branches] == ["False", "True"]  # exitCode -1
    assert json.loads(world.node("entry")["status"]["conditionalBranchesStatus"]["context"][0])["error"]


def test_task_without_command_is_refused() -> None:
    world = World()
    world.add(workflow([{"name": "entry", "templateType": "Task", "task": {"container": {"name": "c"}}}]))
    (scheduled,) = [c for c in world.wf_status()["conditions"] if c["type"] == "Scheduled"]
    assert "task.container.command" in scheduled["message"]


def test_schedule_step_creates_a_schedule_and_deletes_it_at_the_deadline() -> None:
    world = World()
    world.add(
        workflow(
            [
                {"name": "entry", "templateType": "Serial", "children": ["every"]},
                {
                    "name": "every",
                    "templateType": "Schedule",
                    "deadline": "10s",
                    "schedule": {
                        "schedule": "@every 2s",
                        "type": "PodChaos",
                        "concurrencyPolicy": "Allow",
                        "podChaos": {"action": "pod-kill", "mode": "one", "selector": {"labelSelectors": {"app": "w"}}},
                    },
                },
            ]
        )
    )
    (schedule,) = world.of_kind("Schedule")
    assert schedule["spec"]["schedule"] == "@every 2s" and schedule["spec"]["podChaos"]["action"] == "pod-kill"
    assert schedule["metadata"]["labels"]["chaos-mesh.org/controlled-by"] == world.node("every")["metadata"]["name"]
    world.advance(T0 + 10)
    assert not world.of_kind("Schedule") and conds(world.node("every"))["DeadlineExceed"] == "True"
    assert {c["type"]: c["status"] for c in world.wf_status()["conditions"]}["Accomplished"] == "True"


def test_status_check_step_without_abort_never_aborts() -> None:
    world = World()
    world.add(
        workflow([{"name": "entry", "templateType": "Serial", "children": ["probe"]}, check_template(abort=False)])
    )
    world.probe_ok = lambda: False
    world.advance(T0 + 3)
    reasons = {c["type"]: c.get("reason") for c in world.node("probe")["status"]["conditions"] if c["status"] == "True"}
    assert reasons == {"Accomplished": "StatusCheckCompleted"}
    assert "Aborted" not in {c["type"] for c in world.wf_status()["conditions"]}


def test_workflow_phases_for_the_metrics_gauge() -> None:
    world = World()
    world.add(workflow(SERIAL_TEMPLATES, name="running"))
    world.add(workflow([{"name": "entry", "templateType": "Suspend"}], name="invalid"))
    world.add(workflow([{"name": "entry", "templateType": "Serial", "children": ["k"]}, pod_kill("k")], name="done"))
    (pk,) = world.of_kind("PodChaos")
    world.set_status("PodChaos", pk["metadata"]["name"], injected())
    assert world.orch.workflow_phases() == {"invalid": 1, "running": 1, "accomplished": 1, "aborted": 0}


def test_a_workflow_deleted_while_no_scheduler_ran_is_cleaned_up_on_start() -> None:
    world = World()
    world.add(workflow(SERIAL_TEMPLATES))
    assert world.of_kind("NetworkChaos")
    del world.objects[("Workflow", "default", "wf")]  # deleted while the scheduler was down
    world.orch = Orchestrator()
    for obj in list(world.objects.values()):
        world.orch.on_object(world.event(obj, "MODIFIED"), world.now)
    world.take(world.orch.start(world.now))
    assert not world.of_kind("NetworkChaos") and not world.of_kind("WorkflowNode")


def test_the_abort_annotation_set_by_hand_aborts_and_recovers() -> None:
    world = World()
    world.add(
        workflow(
            [
                {"name": "entry", "templateType": "Parallel", "children": ["a", "b"]},
                partition("a", "60s"),
                partition("b", "60s"),
            ]
        )
    )
    assert len(world.of_kind("NetworkChaos")) == 2
    obj = dict(world.objects[("Workflow", "default", "wf")])
    obj["metadata"] = {**obj["metadata"], "annotations": {"workflow.chaos-mesh.org/abort": "true"}}
    world.objects[("Workflow", "default", "wf")] = obj
    world.deliver(world.event(obj, "MODIFIED"))
    assert not world.of_kind("NetworkChaos")
    assert all(conds(world.node(t))["Aborted"] == "True" for t in ("entry", "a", "b"))


def test_events_as_chaos_mesh_records_them_each_once() -> None:
    world = World()
    world.add(workflow(SERIAL_TEMPLATES))
    world.advance(T0 + 8)
    (pk,) = world.of_kind("PodChaos")
    world.set_status("PodChaos", pk["metadata"]["name"], injected(2))
    world.advance(T0 + 20)
    entry = world.node("entry")["metadata"]["name"]
    step = {t: world.node(t)["metadata"]["name"] for t in ("cut", "wait", "kill", "cut2")}

    def created(t: str) -> tuple[str, str, str, str]:
        return "WorkflowNode", "entry", "NodesCreated", f"child nodes created, {step[t]}"

    assert world.events() == [
        ("Workflow", "wf", "EntryCreated", f"entry node created, entry node {entry}"),
        created("cut"),
        ("WorkflowNode", "cut", "NodeDeadlineExceed", "deadline exceed"),
        created("wait"),
        ("WorkflowNode", "wait", "NodeDeadlineExceed", "deadline exceed"),
        created("kill"),
        ("WorkflowNode", "kill", "NodeAccomplished", "node accomplished"),
        created("cut2"),
        ("WorkflowNode", "cut2", "NodeDeadlineExceed", "deadline exceed"),
        ("WorkflowNode", "entry", "NodeAccomplished", "node accomplished"),
        ("Workflow", "wf", "WorkflowAccomplished", "workflow accomplished"),
    ]
    conditions = world.node("entry")["status"]["conditions"]  # Chaos Mesh: reason always there, none here
    assert {c["type"]: c["reason"] for c in conditions} == {"Accomplished": "", "DeadlineExceed": ""}


def test_a_failing_check_records_its_completion_and_the_abort() -> None:
    world = World()
    world.add(
        workflow(
            [
                {"name": "entry", "templateType": "Parallel", "children": ["probe", "cut"]},
                check_template(),
                partition("cut", "30s"),
            ]
        )
    )
    world.probe_ok = lambda: False
    world.advance(T0 + 1)
    check = world.of_kind("StatusCheck")[0]["metadata"]["name"]
    got = world.events()
    assert [e for e in got if e[0] == "StatusCheck"] == [
        ("StatusCheck", check, "StatusCheckCompleted", "status check completed: StatusCheckFailureThresholdExceed"),
        ("StatusCheck", check, "StatusCheckFailureThresholdExceed", "failure threshold exceed"),
    ]
    assert ("WorkflowNode", "cut", "WorkflowAborted", "abort the node because workflow wf aborted") in got
    assert len(got) == len(set(got))


@pytest.mark.parametrize("name", ["Cut", "cut_1", "-cut", "cut."])
def test_a_template_name_that_cannot_name_an_object_is_refused_as_chaos_mesh_does(name: str) -> None:
    """Node and child objects are named after their template: a name that is not a DNS-1123
    subdomain would make every create of them fail, and the workflow would hang.
    """
    world = World()
    world.add(
        workflow(
            [
                {"name": "entry", "templateType": "Serial", "children": [name]},
                {"name": name, "templateType": "Suspend", "deadline": "1s"},
            ]
        )
    )
    (scheduled,) = [c for c in world.wf_status()["conditions"] if c["type"] == "Scheduled"]
    assert scheduled["reason"] == "InvalidSpec" and "spec.templates[1].name" in scheduled["message"]
    assert not world.of_kind("WorkflowNode")


@pytest.mark.parametrize(
    ("template", "field"),
    [
        (
            {
                "name": "x",
                "templateType": "Suspend",
                "deadline": "1s",
                "podChaos": {"action": "pod-kill", "mode": "one"},
            },
            "spec.templates[1] (x).podChaos: a Suspend template cannot have podChaos",
        ),
        (
            {"name": "x", "templateType": "Serial", "children": [], "task": {"container": {"command": ["true"]}}},
            "spec.templates[1] (x).task: a Serial template cannot have task",
        ),
        (
            partition("x", "5s") | {"schedule": {"schedule": "@every 1s", "type": "PodChaos"}},
            "spec.templates[1] (x).schedule: a NetworkChaos template cannot have schedule",
        ),
        (
            {"name": "x", "templateType": "Suspend", "deadline": "1s", "children": ["x"]},
            "spec.templates[1] (x).children: a Suspend template cannot have children",
        ),
    ],
)
def test_a_template_with_another_types_fields_is_refused_as_chaos_mesh_does(
    template: dict[str, Any], field: str
) -> None:
    world = World()
    world.add(workflow([{"name": "entry", "templateType": "Serial", "children": ["x"]}, template]))
    (scheduled,) = [c for c in world.wf_status()["conditions"] if c["type"] == "Scheduled"]
    assert scheduled["reason"] == "InvalidSpec" and field in scheduled["message"], scheduled
    assert not world.of_kind("WorkflowNode")
