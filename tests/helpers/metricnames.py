"""The metric names the services register, found in their source (no service need run)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# A metric is declared by passing its name as the first argument of a metric type's constructor.
DECLARED = re.compile(r'\b(Counter|Gauge|Histogram|Summary|SnapshotGauge)\(\s*"([a-z_:][a-z0-9_:]*)"')


def registered() -> set[str]:
    names = set()
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("libs/**/*.py"), *ROOT.glob("cli/**/*.py")]:
        for kind, name in DECLARED.findall(path.read_text()):
            # prometheus-client exposes a counter as name_total whether or not it was declared so.
            names.add(name if kind != "Counter" or name.endswith("_total") else name + "_total")
    return names
