"""deploy/grafana/chaosbus.json's PromQL: every panel target and annotation query, with Grafana's
variables replaced by values Prometheus accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "chaosbus.json"
# Grafana's built-in interval variables, as a dashboard over the last few minutes would set them.
BUILTINS = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "5m"}


def load() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def expressions(dashboard: dict[str, Any]) -> dict[str, str]:
    """Where -> PromQL: each panel target ("panel title/refId") and each annotation ("annotation name")."""
    out = {f"{p['title']}/{t['refId']}": t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])}
    out |= {f"annotation {a['name']}": a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a}
    return out


def substitute(expr: str, namespace: str) -> str:
    """The expression as Grafana would send it with `namespace` selected; fails on any other variable."""
    for name, value in BUILTINS.items():
        expr = expr.replace(name, value)
    expr = expr.replace("$namespace", re.escape(namespace))
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr
