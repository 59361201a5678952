"""Server-rendered pages. Everything shown comes from users or the cluster (names, labels, YAML,
messages), so every value goes through `e()` (HTML escaping, quotes included) and nothing is ever
put into a script: the only script is the static live.js. Pure.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from chaosbus.common import messages as m
from chaosbus.common.phases import records
from chaosbus.dashboard import graph, timeline, views

Obj = dict[str, Any]
NAV = (
    ("/", "Experiments"),
    ("/schedules", "Schedules"),
    ("/workflows", "Workflows"),
    ("/events", "Events"),
    ("/nodes", "Nodes"),
    ("/new", "New"),
)


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def u(value: object) -> str:
    """One URL path segment."""
    return quote(str(value), safe="")


@dataclass(frozen=True)
class Viewer:
    """Who is looking, and what they may do: decides which buttons are drawn (the server checks again)."""

    role: str
    csrf: str
    can_write: bool
    can_halt: bool
    why_no_halt: str = ""


@dataclass(frozen=True)
class Frame:
    title: str
    page: str
    halt: m.HaltState | None
    viewer: Viewer
    flash: str = ""
    live: bool = True


def _csrf(v: Viewer) -> str:
    return f'<input type="hidden" name="csrf" value="{e(v.csrf)}">'


def button_form(action: str, label: str, v: Viewer, *, css: str = "", confirm: str = "", extra: str = "") -> str:
    data = f' data-confirm="{e(confirm)}"' if confirm else ""
    return (
        f'<form method="post" action="{e(action)}" class="inline"{data}>{_csrf(v)}{extra}'
        f'<button type="submit" class="{e(css)}">{e(label)}</button></form>'
    )


def banner(halt: m.HaltState | None, v: Viewer) -> str:
    """The kill switch: on every page, whatever the page."""
    halted = halt is not None and halt.halted
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(halt.at)) if halt is not None and halt.at else ""
    if halted and halt is not None:
        text = (
            f"<strong>HALTED</strong> since {e(since)} by {e(halt.by)}: {e(halt.reason or 'no reason given')}. "
            "Every fault is recovered; nothing is injected until resumed."
        )
    else:
        text = "Kill switch: <strong>released</strong> (experiments run)."
    if not v.can_halt:
        control = f'<span class="muted">{e(v.why_no_halt)}</span>' if v.why_no_halt else ""
    elif halted:
        control = button_form("/control/resume", "Resume", v, css="resume", confirm="Release the kill switch?")
    else:
        reason = '<input type="text" name="reason" placeholder="reason" maxlength="200" aria-label="reason">'
        control = button_form(
            "/control/halt",
            "HALT everything",
            v,
            css="halt",
            extra=reason,
            confirm="Recover every fault on every node now?",
        )
    return (
        f'<div id="killswitch" class="{"halted" if halted else "released"}" data-halted="{str(halted).lower()}">'
        f'<span class="state">{text}</span> {control}</div>'
    )


def page(frame: Frame, body: str) -> str:
    nav = "".join(
        f'<a href="{href}"{" class=current" if href == frame.page else ""}>{e(label)}</a>' for href, label in NAV
    )
    flash = f'<p class="flash">{e(frame.flash)}</p>' if frame.flash else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>chaosbus · {e(frame.title)}</title>"
        '<link rel="stylesheet" href="/static/style.css"><script src="/static/live.js" defer></script></head>'
        f'<body data-page="{e(frame.page)}" data-live="{"on" if frame.live else "off"}" '
        f'data-csrf="{e(frame.viewer.csrf)}">'
        f'<header><span class="brand">chaosbus</span><nav>{nav}</nav><span class="who">{e(frame.viewer.role)}'
        f"</span>{button_form('/logout', 'Log out', frame.viewer, css='link')}</header>"
        f'<div id="banner">{banner(frame.halt, frame.viewer)}</div>'
        f'{flash}<main id="main">{body}</main></body></html>'
    )


def fragment(frame: Frame, body: str) -> str:
    """What live.js swaps in when something changed: the main part and the kill switch."""
    return json.dumps({"main": body, "banner": banner(frame.halt, frame.viewer)})


def login(error: str = "", cluster: bool = False) -> str:
    kube = (
        (
            "<label>Kubernetes token (optional: writes go to the API server as you)"
            '<input type="password" name="kube_token" autocomplete="off"></label>'
        )
        if cluster
        else ""
    )
    err = f'<p class="error">{e(error)}</p>' if error else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>chaosbus · log in</title>'
        '<link rel="stylesheet" href="/static/style.css"></head><body class="login"><main>'
        f"<h1>chaosbus</h1>{err}"
        '<form method="post" action="/login"><label>Dashboard token<input type="password" name="token" '
        f'id="token" autocomplete="off" autofocus></label>{kube}<button type="submit">Log in</button></form>'
        '<p class="muted">The tokens are in the state directory of <code>chaosbus up</code> '
        "(<code>dashboard/viewer.token</code>, <code>dashboard/admin.token</code>), or the "
        "<code>chaosbus-dashboard-tokens</code> Secret in cluster mode.</p></main></body></html>"
    )


def _table(header: Iterable[str], rows: Iterable[str], *, css: str = "", empty: str = "Nothing yet.") -> str:
    body = "".join(rows)
    if not body:
        return f'<p class="muted">{e(empty)}</p>'
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    return f'<table class="{e(css)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def experiment_href(kind: str, namespace: str, name: str) -> str:
    return f"/experiments/{u(kind)}/{u(namespace)}/{u(name)}"


def _phase(phase: str) -> str:
    return f'<span class="phase phase-{e(phase.lower())}">{e(phase)}</span>'


def experiments(rows: list[views.ExperimentRow]) -> str:
    trs = [
        f'<tr data-key="{e(r.key)}"><td>{e(r.kind)}</td><td>{e(r.namespace)}</td>'
        f'<td><a href="{experiment_href(r.kind, r.namespace, r.name)}">{e(r.name)}</a></td><td>{e(r.action)}</td>'
        f'<td class="phase-cell">{_phase(r.phase)}</td>'
        f'<td class="injected"><span class="n">{r.injected}</span>/<span class="total">{r.total}</span></td>'
        f"<td>{e(r.age)}</td></tr>"
        for r in rows
    ]
    return "<h1>Experiments</h1>" + _table(
        ("kind", "namespace", "name", "action", "phase", "injected", "age"),
        trs,
        css="experiments",
        empty="No experiments. Create one under New.",
    )


def _conditions(conds: list[Obj]) -> str:
    return _table(
        ("type", "status", "reason", "message"),
        [
            f"<tr><td>{e(c.get('type'))}</td><td>{e(c.get('status'))}</td><td>{e(c.get('reason', ''))}</td>"
            f"<td>{e(c.get('message', ''))}</td></tr>"
            for c in conds
        ],
        empty="No conditions yet.",
    )


def _events_table(events: list[Obj], *, with_object: bool = False) -> str:
    rows = []
    for ev in events:
        inv = ev.get("involvedObject") or {}
        obj = f"<td>{e(inv.get('kind'))}/{e(inv.get('name'))}</td>" if with_object else ""
        count = int(ev.get("count", 1) or 1)
        rows.append(
            f'<tr class="event-{e(str(ev.get("type", "")).lower())}"><td>{e(ev.get("lastTimestamp", ""))}</td>'
            f"{obj}<td>{e(ev.get('type', ''))}</td><td>{e(ev.get('reason', ''))}</td>"
            f"<td>{e(ev.get('message', ''))}{f' (x{count})' if count > 1 else ''}</td></tr>"
        )
    header = ("last seen", *(("object",) if with_object else ()), "type", "reason", "message")
    return _table(header, rows, css="events", empty="No Events.")


def timeline_svg(t: timeline.Timeline) -> str:
    parts = [
        f'<svg class="timeline" viewBox="0 0 {t.width} {t.height}" width="{t.width}" height="{t.height}" '
        'role="img" aria-label="timeline of apply and recover events per target">'
    ]
    for lane in t.lanes:
        mid = lane.y + timeline.LANE_H // 2
        parts.append(
            f'<text x="4" y="{mid + 4}" class="lane-label">{e(lane.target)}</text>'
            f'<line x1="{timeline.LABEL_W}" y1="{mid}" x2="{t.width - timeline.MARGIN}" y2="{mid}" '
            'class="lane"/>'
        )
        parts += [
            f'<rect x="{a}" y="{mid - 6}" width="{max(2, b - a)}" height="12" class="in-force"/>' for a, b in lane.spans
        ]
        for mk in lane.marks:
            cy = mid - 4 if mk.operation == "Apply" else mid + 4  # an apply and a recover at one instant both show
            parts.append(
                f'<circle cx="{mk.x}" cy="{cy}" r="5" class="mark op-{e(mk.operation.lower())} '
                f'type-{e(mk.type.lower())}"><title>{e(mk.operation)} {e(mk.type)} '
                f"{e(_clock(mk.at))} {e(mk.message)}</title></circle>"
            )
    y = t.height - 4
    parts.append(
        f'<text x="{timeline.LABEL_W}" y="{y}" class="axis">{e(_clock(t.start))}</text>'
        f'<text x="{t.width - 120}" y="{y}" class="axis">{e(_clock(t.end))}</text></svg>'
    )
    return "".join(parts)


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at)) + f".{int((at % 1) * 1000):03d}"


def experiment(obj: Obj, events: list[Obj], v: Viewer, now: float) -> str:
    row = views.experiment_row(obj, now)
    href = experiment_href(row.kind, row.namespace, row.name)
    actions = ""
    if v.can_write:
        toggle = button_form(f"{href}/resume", "Resume", v) if row.paused else button_form(f"{href}/pause", "Pause", v)
        actions = (
            '<div class="actions">'
            + toggle
            + button_form(f"{href}/delete", "Delete", v, css="danger", confirm=f"Delete {row.name}?")
            + "</div>"
        )
    recs = records(obj)
    rec_rows = [
        f'<tr data-target="{e(r.get("id"))}"><td>{e(r.get("id"))}</td><td>{e(r.get("selectorKey", ""))}</td>'
        f'<td class="record-phase">{e(r.get("phase"))}</td><td>{e(r.get("injectedCount", 0))}</td>'
        f"<td>{e(r.get('recoveredCount', 0))}</td></tr>"
        for r in recs
    ]
    t = timeline.build(recs, now)
    ev_rows = [
        f"<tr><td>{e(_clock(at))}</td><td>{e(target)}</td><td>{e(mk.operation)}</td><td>{e(mk.type)}</td>"
        f"<td>{e(mk.message)}</td></tr>"
        for at, target, mk in t.events()
    ]
    return (
        f'<h1>{e(row.kind)} <span class="name">{e(row.namespace)}/{e(row.name)}</span></h1>'
        f'<p class="summary" data-key="{e(row.key)}">phase {_phase(row.phase)} · injected '
        f'<span class="n">{row.injected}</span>/<span class="total">{row.total}</span>'
        f"{' · paused' if row.paused else ''}</p>{actions}"
        "<section><h2>Targets</h2>"
        + _table(
            ("target", "selector", "phase", "injected", "recovered"),
            rec_rows,
            css="records",
            empty="No targets selected yet.",
        )
        + "</section>"
        f'<section id="timeline"><h2>Timeline</h2>{timeline_svg(t) if recs else ""}'
        + _table(
            ("time (UTC)", "target", "operation", "outcome", "message"),
            ev_rows,
            css="timeline-events",
            empty="No apply or recover events yet.",
        )
        + "</section>"
        f"<section><h2>Conditions</h2>{_conditions(views.conditions(obj))}</section>"
        f"<section><h2>Events</h2>{_events_table(events)}</section>"
        f'<section><h2>Spec</h2><pre class="yaml">{e(views.spec_yaml(obj))}</pre></section>'
    )


def _ref(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    kind, ns, name = str(obj.get("kind", "")), str(meta.get("namespace", "")), str(meta.get("name", ""))
    if views.is_experiment(kind):
        return f'<a href="{experiment_href(kind, ns, name)}">{e(kind)}/{e(name)}</a>'
    if kind == "Workflow":
        return f'<a href="/workflows/{u(ns)}/{u(name)}">{e(kind)}/{e(name)}</a>'
    return f"{e(kind)}/{e(name)}"


def _child(k: Obj, now: float) -> str:
    created = str((k.get("metadata") or {}).get("creationTimestamp", ""))
    phase = _phase(views.experiment_row(k, now).phase) if views.is_experiment(str(k.get("kind"))) else ""
    return f'<li>{_ref(k)} {phase} <span class="muted">{e(views.age(created, now))}</span></li>'


def schedules(items: list[views.ScheduleView], v: Viewer, now: float) -> str:
    blocks = []
    for s in items:
        meta, spec, status = s.obj.get("metadata") or {}, s.obj.get("spec") or {}, s.obj.get("status") or {}
        kids = [_child(k, now) for k in s.children]
        name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        blocks.append(
            f'<section class="schedule" data-key="{e(name)}" data-paused="{str(s.paused).lower()}">'
            f"<h2>{e(name)}</h2>"
            f"<p>{e(spec.get('schedule', ''))} · {e(s.kind)} · {e(spec.get('concurrencyPolicy') or 'Forbid')}"
            f" · {'paused' if s.paused else 'active'} · last fired {e(status.get('time') or 'never')}</p>"
            f"{_schedule_actions(meta, s, v)}"
            f"<ul>{''.join(kids) or '<li class=muted>no children</li>'}</ul></section>"
        )
    return "<h1>Schedules</h1>" + ("".join(blocks) or '<p class="muted">No Schedules.</p>')


def schedule_href(namespace: str, name: str) -> str:
    return f"/schedules/{u(namespace)}/{u(name)}"


def _schedule_actions(meta: Obj, s: views.ScheduleView, v: Viewer) -> str:
    """Pause stops new fires and pauses the running children (Chaos Mesh's annotation on the
    Schedule); a Workflow's children run on, as in Chaos Mesh, where a Workflow has no pause.
    """
    if not v.can_write:
        return ""
    href = schedule_href(str(meta.get("namespace", "")), str(meta.get("name", "")))
    toggle = button_form(f"{href}/resume", "Resume", v) if s.paused else button_form(f"{href}/pause", "Pause", v)
    return f'<div class="actions">{toggle}</div>'


def workflows(items: list[Obj], now: float) -> str:
    rows = []
    for w in items:
        meta = w.get("metadata") or {}
        rows.append(
            f'<tr><td>{e(meta.get("namespace"))}</td><td><a href="/workflows/{u(meta.get("namespace", ""))}/'
            f'{u(meta.get("name", ""))}">{e(meta.get("name"))}</a></td><td>{e(views.workflow_state(w))}</td>'
            f"<td>{e(views.age(str(meta.get('creationTimestamp', '')), now))}</td></tr>"
        )
    return "<h1>Workflows</h1>" + _table(("namespace", "name", "state", "age"), rows, empty="No Workflows.")


def graph_svg(g: graph.Graph) -> str:
    if not g.nodes:
        return '<p class="muted">The entry template is missing: nothing to draw.</p>'
    parts = [
        f'<svg class="workflow-graph" viewBox="0 0 {g.width} {g.height}" width="{g.width}" height="{g.height}" '
        'role="img" aria-label="workflow graph">'
    ]
    for a, b in g.edges:
        na, nb = g.node(a), g.node(b)
        x1, y1 = na.x + graph.BOX_W, na.y + graph.BOX_H // 2
        x2, y2 = nb.x, nb.y + graph.BOX_H // 2
        mid = (x1 + x2) // 2
        parts.append(f'<path d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" class="edge"/>')
    for n in g.nodes:
        parts.append(
            f'<g class="wf-node state-{e(n.state)}" data-template="{e(n.template)}" data-state="{e(n.state)}">'
            f'<rect x="{n.x}" y="{n.y}" width="{graph.BOX_W}" height="{graph.BOX_H}" rx="6"/>'
            f'<text x="{n.x + 8}" y="{n.y + 18}" class="wf-name">{e(n.template[:22])}</text>'
            f'<text x="{n.x + 8}" y="{n.y + 35}" class="wf-type">{e(n.template_type)} · {e(n.state)}</text>'
            f"<title>{e(n.template)} ({e(n.template_type)}): {e(n.state)} {e(n.node_name)} {e(n.detail)}"
            "</title></g>"
        )
    parts.append("</svg>")
    cut = '<p class="muted">Too many nodes: the graph is cut.</p>' if g.truncated else ""
    return "".join(parts) + cut


def workflow(w: Obj, nodes: list[Obj], events: list[Obj], v: Viewer) -> str:
    meta = w.get("metadata") or {}
    g = graph.layout(w, nodes)
    node_rows = [
        f'<tr><td>{e(n.template)}</td><td>{e(n.template_type)}</td><td class="state-{e(n.state)}">'
        f"{e(n.state)}</td><td>{e(n.node_name)}</td><td>{e(n.detail)}</td></tr>"
        for n in g.nodes
    ]
    actions = ""
    if v.can_write:
        actions = (
            '<div class="actions">'
            + button_form(
                f"/objects/Workflow/{u(meta.get('namespace', ''))}/{u(meta.get('name', ''))}/delete",
                "Delete",
                v,
                css="danger",
                confirm="Delete this workflow and recover its faults?",
            )
            + "</div>"
        )
    return (
        f'<h1>Workflow <span class="name">{e(meta.get("namespace"))}/{e(meta.get("name"))}</span></h1>'
        f'<p class="summary">state <span class="wf-state">{e(views.workflow_state(w))}</span></p>{actions}'
        f'<section><h2>Graph</h2><div class="graph">{graph_svg(g)}</div></section>'
        "<section><h2>Nodes</h2>"
        + _table(("template", "type", "state", "node", "detail"), node_rows)
        + f"</section><section><h2>Conditions</h2>{_conditions(views.conditions(w))}</section>"
        f"<section><h2>Events</h2>{_events_table(events)}</section>"
        f'<section><h2>Spec</h2><pre class="yaml">{e(views.spec_yaml(w))}</pre></section>'
    )


def events(items: list[Obj], note: str = "") -> str:
    extra = f'<p class="muted">{e(note)}</p>' if note else ""
    return f"<h1>Events</h1>{extra}{_events_table(items, with_object=True)}"


def nodes(items: list[views.NodeView], now: float) -> str:
    rows = []
    for n in items:
        seen = f"{now - n.last_seen:.1f} s ago" if n.last_seen else "never"
        lease = (
            f"{n.lease_age_s:.1f} s ago (ttl {n.lease_ttl_s:.0f} s)"
            if n.lease_age_s >= 0
            else ("none yet" if n.last_seen else "-")
        )
        exps = ", ".join(f"{x.kind}/{x.namespace}/{x.name}: {x.entries}" for x in n.experiments)
        rows.append(
            f'<tr data-node="{e(n.name)}"><td>{e(n.name)}</td><td class="node-{e(n.state)}">{e(n.state)}</td>'
            f"<td>{e(seen)}</td><td>{e(lease)}</td><td>{n.open_entries}</td><td>{e(exps)}</td></tr>"
        )
    return (
        '<h1>Nodes</h1><p class="muted">Each injector reports its lease, kill-switch state and open journal '
        "entries every few seconds.</p>"
        + _table(
            ("node", "injector", "last seen", "lease heard", "journal entries", "by experiment"),
            rows,
            empty="No node has reported yet.",
        )
    )


SAMPLE = """apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: web-partition
  namespace: default
spec:
  action: partition
  mode: all
  selector:
    labelSelectors: {app: web}
  direction: both
  duration: 60s
"""


def new_form(v: Viewer, text: str = "", errors: list[views.FieldError] | None = None) -> str:
    errors = errors or []
    text = text or SAMPLE
    listing = ""
    if errors:
        by_line: dict[int | None, list[views.FieldError]] = {}
        for fe in errors:
            by_line.setdefault(fe.line, []).append(fe)
        lines = []
        for i, ln in enumerate(text.splitlines(), start=1):
            bad = by_line.get(i, [])
            css = ' class="bad"' if bad else ""
            lines.append(f'<div{css}><span class="ln">{i}</span><code>{e(ln)}</code></div>')
            lines += [
                f'<div class="field-error" data-field="{e(fe.field)}"><span class="ln"></span>'
                f"<strong>{e(fe.field)}</strong>: {e(fe.message)}</div>"
                for fe in bad
            ]
        unplaced = [fe for fe in errors if fe.line is None]
        listing = (
            '<section class="errors"><h2>Not valid</h2>'
            + "".join(
                f'<p class="field-error" data-field="{e(fe.field)}"><strong>{e(fe.field or "object")}'
                f"</strong>: {e(fe.message)}</p>"
                for fe in unplaced
            )
            + f'<div class="listing">{"".join(lines)}</div></section>'
        )
    if not v.can_write:
        return (
            '<h1>New</h1><p class="muted">Your token is read-only: log in with the admin token to create '
            "experiments.</p>"
        )
    return (
        '<h1>New from YAML</h1><p class="muted">Any chaos kind, Schedule, Workflow or StatusCheck, as for '
        "Chaos Mesh; validated before anything is stored.</p>"
        + listing
        + f'<form method="post" action="/new" class="yaml-form">{_csrf(v)}'
        f'<textarea name="yaml" id="yaml" rows="24" spellcheck="false">{e(text)}</textarea>'
        '<button type="submit" id="create">Create</button></form>'
    )
