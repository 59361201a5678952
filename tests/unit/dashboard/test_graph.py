"""The workflow graph: layout on the grid and each box's state from its WorkflowNode."""

from __future__ import annotations

from typing import Any

from chaosbus.dashboard import graph

Obj = dict[str, Any]


def wf(entry: str, *templates: Obj) -> Obj:
    return {
        "kind": "Workflow",
        "metadata": {"name": "w", "namespace": "default"},
        "spec": {"entry": entry, "templates": list(templates)},
    }


def node(name: str, template: str, parent: str, **conds: str) -> Obj:
    return {
        "kind": "WorkflowNode",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"chaos-mesh.org/workflow": "w", "chaos-mesh.org/controlled-by": parent},
        },
        "spec": {"templateName": template},
        "status": {"conditions": [{"type": t, "status": s} for t, s in conds.items()]},
    }


SERIAL = wf(
    "entry",
    {"name": "entry", "templateType": "Serial", "children": ["cut", "both", "probe"]},
    {"name": "cut", "templateType": "NetworkChaos"},
    {"name": "both", "templateType": "Parallel", "children": ["kill", "wait"]},
    {"name": "kill", "templateType": "PodChaos"},
    {"name": "wait", "templateType": "Suspend"},
    {"name": "probe", "templateType": "StatusCheck"},
)


def test_serial_children_go_right_and_parallel_children_go_down() -> None:
    g = graph.layout(SERIAL, [])
    at = {n.template: (n.col, n.row) for n in g.nodes}
    assert at == {"entry": (0, 0), "cut": (1, 0), "both": (2, 0), "kill": (3, 0), "wait": (3, 1), "probe": (4, 0)}
    names = {n.path: n.template for n in g.nodes}
    edges = {(names[a], names[b]) for a, b in g.edges}
    assert edges == {("entry", "cut"), ("cut", "both"), ("both", "kill"), ("both", "wait"), ("both", "probe")}
    assert g.width >= 4 * graph.CELL_W + graph.BOX_W and g.height >= graph.CELL_H + graph.BOX_H


def test_boxes_never_overlap() -> None:
    g = graph.layout(SERIAL, [])
    cells = [(n.col, n.row) for n in g.nodes]
    assert len(cells) == len(set(cells))


def test_states_come_from_the_nodes_that_run_each_template() -> None:
    nodes = [
        node("entry-aaaaa", "entry", "w"),
        node("cut-bbbbb", "cut", "entry-aaaaa", Accomplished="False", DeadlineExceed="True"),
        node("both-ccccc", "both", "entry-aaaaa"),
        node("kill-ddddd", "kill", "both-ccccc", Aborted="True"),
    ]
    states = {n.template: n.state for n in graph.layout(SERIAL, nodes).nodes}
    assert states == {
        "entry": "running",
        "cut": "accomplished",
        "both": "running",
        "kill": "aborted",
        "wait": "pending",
        "probe": "pending",
    }


def test_task_branches_are_drawn_as_children() -> None:
    w = wf(
        "t",
        {
            "name": "t",
            "templateType": "Task",
            "conditionalBranches": [{"target": "a", "expression": "x"}, {"target": "b", "expression": "y"}],
        },
        {"name": "a", "templateType": "Suspend"},
        {"name": "b", "templateType": "Suspend"},
    )
    at = {n.template: (n.col, n.row) for n in graph.layout(w, []).nodes}
    assert at == {"t": (0, 0), "a": (1, 0), "b": (1, 1)}


def test_a_reference_loop_or_a_missing_entry_cannot_hang_or_crash_it() -> None:
    loop = wf(
        "a",
        {"name": "a", "templateType": "Serial", "children": ["b"]},
        {"name": "b", "templateType": "Serial", "children": ["a", "missing"]},
    )
    assert [n.template for n in graph.layout(loop, []).nodes] == ["a", "b"]
    assert graph.layout(wf("nope"), []).nodes == []


def test_a_huge_expansion_is_cut() -> None:
    fan = [{"name": f"l{i}", "templateType": "Parallel", "children": [f"l{i + 1}"] * 3} for i in range(12)]
    g = graph.layout(wf("l0", *fan, {"name": "l12", "templateType": "Suspend"}), [])
    assert g.truncated and len(g.nodes) <= graph.MAX_NODES
