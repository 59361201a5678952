"""Property tests of the Workflow state machine (hypothesis): for random trees of Serial, Parallel,
Suspend, partition (ends at its deadline) and pod-kill (ends when injected, or at its deadline)
steps, every workflow whose steps all finish reaches Accomplished, no node finishes after its
deadline, no child's deadline exceeds its parent's, nothing is created twice, and no fault is
left behind; also when the scheduler restarts at a random moment.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from unit.scheduler.wfworld import T0, World, injected, partition, pod_kill, workflow

from chaosbus.common.objects import parse_rfc3339
from chaosbus.scheduler import workflow as wf
from chaosbus.scheduler.orchestrator import Orchestrator

leaf = st.one_of(
    st.builds(lambda d: ("Suspend", d), st.integers(1, 20)),
    st.builds(lambda d: ("Partition", d), st.integers(1, 20)),
    st.builds(lambda d, delay: ("PodKill", d, delay), st.one_of(st.none(), st.integers(1, 20)), st.integers(0, 25)),
)
tree = st.recursive(
    leaf,
    lambda kids: st.tuples(
        st.sampled_from(["Serial", "Parallel"]),
        st.one_of(st.none(), st.integers(1, 40)),
        st.lists(kids, min_size=1, max_size=3),
    ),
    max_leaves=7,
)


def templates_of(shape: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Flatten a shape into templates named t0, t1, ...; pod-kill injection delays by template."""
    templates: list[dict[str, Any]] = []
    delays: dict[str, int] = {}
    counter = itertools.count()

    def add(node: Any) -> str:
        name = f"t{next(counter)}"
        kind = node[0]
        if kind in ("Serial", "Parallel"):
            t: dict[str, Any] = {"name": name, "templateType": kind}
            templates.append(t)
            t["children"] = [add(c) for c in node[2]]
            if node[1] is not None:
                t["deadline"] = f"{node[1]}s"
        elif kind == "Suspend":
            templates.append({"name": name, "templateType": "Suspend", "deadline": f"{node[1]}s"})
        elif kind == "Partition":
            templates.append(partition(name, f"{node[1]}s"))
        else:
            templates.append(pod_kill(name, None if node[1] is None else f"{node[1]}s"))
            delays[name] = node[2]
        return name

    add(shape if shape[0] in ("Serial", "Parallel") else ("Serial", None, [shape]))
    return templates, delays


def run(shape: Any, restart_at: float | None) -> World:
    templates, delays = templates_of(shape)
    world = World()
    injections: dict[str, float] = {}  # PodChaos name -> when its targets are all Injected

    def on_create(obj: dict[str, Any]) -> None:
        if obj["kind"] == "PodChaos":
            node = obj["metadata"]["labels"][wf.LABEL_CONTROLLED_BY]
            template = next(
                n["spec"]["templateName"] for n in world.of_kind("WorkflowNode") if n["metadata"]["name"] == node
            )
            injections[obj["metadata"]["name"]] = world.now + delays[template]

    world.on_create = on_create
    world.add(workflow(templates, entry="t0"))
    for _ in range(500):
        if restart_at is not None and world.now >= restart_at:
            restart_at = None
            world.orch = Orchestrator()
            for obj in list(world.objects.values()):
                world.orch.on_object(world.event(obj, "MODIFIED"), world.now)
            world.apply(world.orch.start(world.now).writes)
        while due := sorted(k for k, at in injections.items() if at <= world.now):
            for name in due:
                del injections[name]
                if ("PodChaos", "default", name) in world.objects:
                    world.set_status("PodChaos", name, injected())
        live = {k: t for k, t in injections.items() if ("PodChaos", "default", k) in world.objects}
        times = [t for t in (world.orch.next_wakeup(), *live.values()) if t is not None and t > world.now]
        if not times or accomplished(world):
            break
        world.advance(min(times))
    return world


def accomplished(world: World) -> bool:
    return {c["type"]: c["status"] for c in world.wf_status().get("conditions", [])}.get("Accomplished") == "True"


def check(world: World) -> None:
    assert accomplished(world), world.wf_status()
    finished_at: dict[str, float] = {}
    for at, w in world.log:
        if w.op == "status" and w.kind == "WorkflowNode" and wf.finished_by(w.body):
            finished_at.setdefault(w.name, at)
    nodes = {n["metadata"]["name"]: n for n in world.of_kind("WorkflowNode")}
    for name, node in nodes.items():
        assert name in finished_at, f"{name} never finished"
        deadline = node["spec"].get("deadline")
        if deadline:
            assert finished_at[name] <= parse_rfc3339(deadline), f"{name} ran past its deadline"
        parent = nodes.get(node["metadata"]["labels"][wf.LABEL_CONTROLLED_BY])
        if parent is not None and parent["spec"].get("deadline"):
            assert deadline and parse_rfc3339(deadline) <= parse_rfc3339(parent["spec"]["deadline"])
    creates = world.creates()
    assert len(creates) == len(set(creates)), "an object was asked for twice"
    assert not world.of_kind("NetworkChaos") and not world.of_kind("PodChaos"), "a fault was left behind"


@settings(max_examples=150, deadline=None)
@given(tree)
def test_every_workflow_whose_steps_finish_is_accomplished_within_deadlines(shape: Any) -> None:
    check(run(shape, restart_at=None))


@settings(max_examples=100, deadline=None)
@given(tree, st.integers(0, 60))
def test_a_restart_at_any_moment_changes_nothing(shape: Any, restart_after: int) -> None:
    check(run(shape, restart_at=T0 + restart_after))
