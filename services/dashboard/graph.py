"""A Workflow drawn as its node graph: templates expanded from the entry into a tree, laid out on
a grid (Serial children left to right, Parallel children and Task branches top to bottom), each
box coloured by the state of the WorkflowNode that runs it. Pure; `html` turns it into SVG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
MAX_NODES = 300  # a larger expansion is cut (a reference loop or a huge workflow): the page stays small
CELL_W, CELL_H = 190, 64
BOX_W, BOX_H = 160, 44
MARGIN = 12

PENDING, RUNNING, ACCOMPLISHED, ABORTED, FAILED = "pending", "running", "accomplished", "aborted", "failed"
CONTAINERS = ("Serial", "Parallel")


@dataclass
class GraphNode:
    path: str  # position in the tree: "0", "0.1", ... (a template may appear more than once)
    template: str
    template_type: str
    col: int = 0
    row: int = 0
    state: str = PENDING
    node_name: str = ""  # the WorkflowNode running it, once there is one
    detail: str = ""  # a condition's reason, the chaos object it created

    @property
    def x(self) -> int:
        return MARGIN + self.col * CELL_W

    @property
    def y(self) -> int:
        return MARGIN + self.row * CELL_H


@dataclass
class Graph:
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)  # path -> path
    truncated: bool = False
    width: int = 0
    height: int = 0

    def node(self, path: str) -> GraphNode:
        return next(n for n in self.nodes if n.path == path)


@dataclass
class _Tree:
    template: Obj
    children: list[_Tree]
    cols: int = 1
    rows: int = 1


def _templates(spec: Obj) -> dict[str, Obj]:
    return {str(t.get("name")): t for t in spec.get("templates") or [] if isinstance(t, dict) and t.get("name")}


def _child_names(t: Obj) -> list[str]:
    if t.get("templateType") in CONTAINERS:
        return [str(c) for c in t.get("children") or []]
    return [str(b.get("target")) for b in t.get("conditionalBranches") or [] if isinstance(b, dict)]


def _expand(name: str, templates: dict[str, Obj], ancestors: tuple[str, ...], budget: list[int]) -> _Tree | None:
    t = templates.get(name)
    if t is None or name in ancestors or budget[0] <= 0:
        return None
    budget[0] -= 1
    kids = [k for c in _child_names(t) if (k := _expand(c, templates, (*ancestors, name), budget)) is not None]
    tree = _Tree(t, kids)
    if not kids:
        return tree
    if t.get("templateType") == "Serial":
        tree.cols, tree.rows = 1 + sum(k.cols for k in kids), max(k.rows for k in kids)
    else:
        tree.cols, tree.rows = 1 + max(k.cols for k in kids), sum(k.rows for k in kids)
    return tree


def _place(tree: _Tree, path: str, col: int, row: int, g: Graph) -> None:
    t = tree.template
    g.nodes.append(
        GraphNode(
            path=path, template=str(t.get("name")), template_type=str(t.get("templateType", "")), col=col, row=row
        )
    )
    serial = t.get("templateType") == "Serial"
    c_col, c_row, previous = col + 1, row, path
    for i, kid in enumerate(tree.children):
        kid_path = f"{path}.{i}"
        _place(kid, kid_path, c_col, c_row, g)
        g.edges.append((previous if serial else path, kid_path))
        if serial:
            c_col += kid.cols
            previous = kid_path
        else:
            c_row += kid.rows


def layout(workflow: Obj, nodes: list[Obj]) -> Graph:
    """The graph of `workflow` with each box's state from its WorkflowNode objects (`nodes`)."""
    spec = workflow.get("spec") or {}
    templates = _templates(spec)
    budget = [MAX_NODES]
    tree = _expand(str(spec.get("entry", "")), templates, (), budget)
    g = Graph(truncated=budget[0] <= 0)
    if tree is None:
        return g
    _place(tree, "0", 0, 0, g)
    _states(g, nodes)
    g.width = 2 * MARGIN + max(n.col for n in g.nodes) * CELL_W + BOX_W
    g.height = 2 * MARGIN + max(n.row for n in g.nodes) * CELL_H + BOX_H
    return g


def node_state(node: Obj) -> tuple[str, str]:
    """A WorkflowNode's state for the graph, and the reason or object worth showing with it."""
    status = node.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    resource = status.get("chaosResource") or {}
    detail = f"{resource.get('kind', '')}/{resource.get('name', '')}" if resource.get("name") else ""
    if conds.get("Aborted", {}).get("status") == "True":
        return ABORTED, str(conds["Aborted"].get("reason") or detail)
    # A chaos or Suspend step ends at its deadline: DeadlineExceed is how it finishes, not a failure.
    deadline = conds.get("DeadlineExceed", {})
    if deadline.get("status") == "True":
        return ACCOMPLISHED, str(deadline.get("reason") or detail)
    if conds.get("Accomplished", {}).get("status") == "True":
        return ACCOMPLISHED, detail
    return RUNNING, detail


def _states(g: Graph, nodes: list[Obj]) -> None:
    """Match each box to its WorkflowNode: by template, and under the node that runs its parent."""
    by_template: dict[str, list[Obj]] = {}
    for n in nodes:
        by_template.setdefault(str((n.get("spec") or {}).get("templateName", "")), []).append(n)
    names: dict[str, str] = {}  # path -> WorkflowNode name
    for gn in g.nodes:  # parents come before their children
        parent = names.get(gn.path.rpartition(".")[0], "") if "." in gn.path else ""
        for n in by_template.get(gn.template, []):
            meta = n.get("metadata") or {}
            owner = (meta.get("labels") or {}).get("chaos-mesh.org/controlled-by", "")
            if "." in gn.path and parent and owner and owner != parent:
                continue
            gn.node_name = str(meta.get("name", ""))
            gn.state, gn.detail = node_state(n)
            names[gn.path] = gn.node_name
            break
