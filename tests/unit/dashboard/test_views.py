"""Page models: rows, timelines, validation errors placed at their line, and escaping."""

from __future__ import annotations

from typing import Any

import msgspec

from chaosbus.common import messages as m
from chaosbus.dashboard import html, timeline, views, writes

Obj = dict[str, Any]
NOW = 1_800_000_000.0


def experiment(name: str = "p1", recs: list[Obj] | None = None, **status: Any) -> Obj:
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "NetworkChaos",
        "metadata": {"name": name, "namespace": "default", "uid": "u1", "creationTimestamp": "2027-01-15T08:00:00Z"},
        "spec": {"action": "partition"},
        "status": {"experiment": {"containerRecords": recs or []}, **status},
    }


def rec(target: str, phase: str, *events: tuple[str, str, str]) -> Obj:
    return {
        "id": target,
        "selectorKey": ".",
        "phase": phase,
        "injectedCount": 1,
        "recoveredCount": 0,
        "events": [{"operation": op, "type": t, "timestamp": ts} for op, t, ts in events],
    }


def test_rows_show_phase_and_injected_of_total() -> None:
    obj = experiment(recs=[rec("default/a", "Injected"), rec("default/b", "Not Injected")], phase="Running")
    (row,) = views.experiment_rows([obj, {"kind": "Workflow", "metadata": {"name": "w"}}], NOW)
    assert (row.key, row.phase, row.injected, row.total) == ("NetworkChaos/default/p1", "Running", 1, 2)


def test_timeline_has_a_lane_per_target_and_spans_while_in_force() -> None:
    recs = [
        rec(
            "default/a",
            "Not Injected",
            ("Apply", "Succeeded", "2027-01-15T08:00:00Z"),
            ("Recover", "Succeeded", "2027-01-15T08:00:10Z"),
        ),
        rec(
            "default/b",
            "Injected",
            ("Apply", "Failed", "2027-01-15T08:00:01Z"),
            ("Apply", "Succeeded", "2027-01-15T08:00:02Z"),
        ),
    ]
    start = 1800000000.0 - 1800000000.0 % 1  # any time after the events
    t = timeline.build(recs, start)
    a, b = t.lanes
    assert [mk.operation for mk in a.marks] == ["Apply", "Recover"] and len(a.spans) == 1
    assert (
        a.spans[0][0] < a.spans[0][1]
        and b.spans
        and b.spans[0][1] == a.marks[0].x + (timeline.PLOT_W - 2 * timeline.MARGIN)
    )
    assert [(target, mk.operation, mk.type) for _, target, mk in t.events()] == [
        ("default/a", "Apply", "Succeeded"),
        ("default/b", "Apply", "Failed"),
        ("default/b", "Apply", "Succeeded"),
        ("default/a", "Recover", "Succeeded"),
    ]


def test_admission_errors_point_at_their_line() -> None:
    text = (
        "apiVersion: chaos-mesh.org/v1alpha1\nkind: NetworkChaos\nmetadata:\n  name: bad\nspec:\n"
        "  action: partition\n  mode: all\n  selector:\n    labelSelectors: {app: web}\n  direction: sideways\n"
    )
    try:
        writes.admitted(text)
    except writes.WriteError as e:
        errors = e.errors
    else:
        raise AssertionError("admitted a bad direction")
    (fe,) = views.located(text, errors)
    assert fe.field == "spec.direction" and "expected one of" in fe.message and fe.line == 10


def test_nested_and_indexed_paths_find_their_line_or_the_nearest_parent() -> None:
    text = "spec:\n  templates:\n  - name: a\n  - name: b\n    deadline: x\n"
    assert views.line_of(text, "spec.templates[1].deadline") == 5
    assert views.line_of(text, "spec.templates[1].nothing") == 4
    assert views.line_of(text, "spec.unknown") == 1
    assert views.line_of("a: [unclosed", "spec.x") is None


def test_yaml_that_does_not_parse_is_an_error_not_a_crash() -> None:
    try:
        writes.admitted("kind: [unclosed\n")
    except writes.WriteError as e:
        assert e.errors
    else:
        raise AssertionError("accepted broken YAML")


def test_everything_from_users_is_escaped() -> None:
    evil = '<script>alert(1)</script>"'
    obj = experiment(name=evil, recs=[rec(evil, "Injected", ("Apply", "Succeeded", "2027-01-15T08:00:00Z"))])
    obj["metadata"]["labels"] = {"x": evil}
    viewer = html.Viewer(role="admin", csrf='"><b>', can_write=True, can_halt=True)
    halt = m.HaltState(halted=True, reason=evil, by=evil, at=NOW)
    frame = html.Frame(title=evil, page="/", halt=halt, viewer=viewer, flash=evil)
    out = html.page(frame, html.experiment(obj, [{"involvedObject": {"uid": "u1"}, "message": evil}], viewer, NOW))
    out += html.experiments(views.experiment_rows([obj], NOW))
    out += html.new_form(viewer, evil + "\nkind: x\n", views.located(evil, [f"spec.x: {evil}"]))
    assert "<script>alert" not in out and '"><b>' not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in out
    assert '<script src="/static/live.js" defer></script>' in out  # the only script


def test_node_health_becomes_silent_when_reports_stop() -> None:
    h = m.NodeHealth(
        node="n1",
        at=NOW - 1,
        interval_s=2.0,
        lease_age_s=1.5,
        lease_ttl_s=15,
        open_entries=2,
        experiments=[m.JournalSummary(experiment_uid="u", name="p1", entries=2)],
    )
    (fresh,) = views.node_views({"n1": h}, [], NOW)
    assert (fresh.state, fresh.open_entries) == ("healthy", 2)
    stale = msgspec.structs.replace(h, at=NOW - 60)
    assert [v.state for v in views.node_views({"n1": stale}, ["n2"], NOW)] == ["silent", "silent"]
    assert views.node_views({"n1": msgspec.structs.replace(h, halted=True)}, [], NOW)[0].state == "halted"


def test_a_schedule_lists_the_objects_it_spawned_newest_first() -> None:
    sched = {
        "kind": "Schedule",
        "metadata": {
            "name": "s",
            "namespace": "default",
            "uid": "su",
            "annotations": {"experiment.chaos-mesh.org/pause": "true"},
        },
        "spec": {"type": "NetworkChaos", "schedule": "@every 1m"},
    }

    def child(name: str, created: str, owner: str = "su") -> Obj:
        return {
            "kind": "NetworkChaos",
            "metadata": {
                "name": name,
                "namespace": "default",
                "creationTimestamp": created,
                "ownerReferences": [{"kind": "Schedule", "uid": owner}],
            },
        }

    objs = [
        sched,
        child("s-1", "2027-01-15T08:00:00Z"),
        child("s-2", "2027-01-15T08:01:00Z"),
        child("other", "2027-01-15T08:02:00Z", owner="x"),
    ]
    (view,) = views.schedule_views(objs)
    assert view.paused and view.kind == "NetworkChaos"
    assert [k["metadata"]["name"] for k in view.children] == ["s-2", "s-1"]
    viewer_page = html.schedules([view], html.Viewer("viewer", "c", False, False), NOW)
    assert "s-2" in viewer_page and "/schedules/default/s/" not in viewer_page  # no controls when read-only
    admin_page = html.schedules([view], html.Viewer("admin", "c", True, False), NOW)
    assert 'action="/schedules/default/s/resume"' in admin_page and "/pause" not in admin_page  # paused: Resume
    active = views.ScheduleView(
        obj={**sched, "metadata": {"name": "s<", "namespace": "default"}}, kind="", paused=False, children=[]
    )
    assert 'action="/schedules/default/s%3C/pause"' in html.schedules(
        [active], html.Viewer("admin", "c", True, False), NOW
    )


def test_a_workflow_s_nodes_are_its_own_only() -> None:
    w = {"kind": "Workflow", "metadata": {"name": "w", "namespace": "default"}}

    def wfn(namespace: str, workflow: str) -> Obj:
        return {
            "kind": "WorkflowNode",
            "metadata": {"namespace": namespace, "labels": {"chaos-mesh.org/workflow": workflow}},
        }

    mine, other_ns, other_wf = wfn("default", "w"), wfn("x", "w"), wfn("default", "v")
    assert views.workflow_nodes(w, [mine, other_ns, other_wf, w]) == [mine]


def test_a_viewer_gets_no_write_or_halt_controls() -> None:
    viewer = html.Viewer(role="viewer", csrf="c", can_write=False, can_halt=False, why_no_halt="read-only token")
    obj = experiment(recs=[rec("default/a", "Injected")])
    out = html.experiment(obj, [], viewer, NOW) + html.banner(None, viewer) + html.new_form(viewer)
    assert "/pause" not in out and "/delete" not in out and "/control/halt" not in out and "<textarea" not in out
    assert "read-only token" in out
