"""deploy/grafana/chaosbus.json is a dashboard Grafana can import: one Prometheus datasource
variable used everywhere, unique panel ids, and PromQL over metrics the services register."""

from __future__ import annotations

import re

from helpers import grafana, metricnames

METRIC = re.compile(r"\b(chaos(?:bus|_controller_manager)_[a-z0-9_]+)")


def test_every_panel_and_annotation_uses_the_datasource_variable() -> None:
    dash = grafana.load()
    assert dash["uid"] and dash["title"]
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource", "namespace"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    things = [*dash["panels"], *(t for p in dash["panels"] for t in p["targets"]), *dash["annotations"]["list"]]
    assert all(t["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for t in things)


def test_expressions_name_only_registered_metrics() -> None:
    known = metricnames.registered()
    exprs = grafana.expressions(grafana.load())
    assert len(exprs) >= 10 and any(k.startswith("annotation") for k in exprs), exprs
    for where, expr in exprs.items():
        grafana.substitute(expr, "default")  # no variable the test cannot fill in
        names = set(METRIC.findall(expr))
        assert names, where
        # A histogram is registered under its base name; its series are name_bucket/_sum/_count.
        unknown = {n for n in names if n not in known and re.sub(r"_(bucket|sum|count)$", "", n) not in known}
        assert not unknown, f"{where}: {unknown}"
