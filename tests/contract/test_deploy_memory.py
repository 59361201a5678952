"""The deploy base's memory requests rest on measured figures: each Deployment in docs/deploy.md's
memory table requests at least the idle RSS documented there (measured by
bench/bench_cluster_injector.py), and its manifest's request and limit are the ones the table shows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploy.md"
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def table() -> dict[str, dict[str, str]]:
    """Deployment name -> its row (idle, peak, request, limit) in the Memory section."""
    section = DOC.read_text().split("\n## Memory\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, dict[str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.match(r"`(chaosbus-[a-z-]+)`", cells[0]) if len(cells) == 5 else None
        if name:
            rows[name.group(1)] = dict(zip(("idle", "peak", "request", "limit"), cells[1:], strict=True))
    return rows


def container_resources(name: str) -> dict[str, Any]:
    for path in (ROOT / "deploy" / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Deployment" and doc["metadata"]["name"] == name:
                [container] = doc["spec"]["template"]["spec"]["containers"]
                resources: dict[str, Any] = container["resources"]
                return resources
    raise AssertionError(f"no Deployment {name} in deploy/k8s")


def quantity(q: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]i)", q).groups()  # type: ignore[union-attr]
    return int(number) * UNITS[unit]


def mib(figure: str) -> float:
    found = re.match(r"(\d+(?:\.\d+)?) MiB", figure)
    assert found, f"not a figure in MiB: {figure!r}"
    return float(found.group(1)) * 2**20


ROWS = table()


def test_the_table_covers_every_deployment_that_works_through_the_api() -> None:
    assert set(ROWS) == {"chaosbus-cluster-injector", "chaosbus-watcher", "chaosbus-recorder", "chaosbus-auth"}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_the_request_holds_the_measured_idle_figure_and_is_the_documented_one(name: str) -> None:
    row, resources = ROWS[name], container_resources(name)
    request, limit = resources["requests"]["memory"], resources["limits"]["memory"]
    assert request == row["request"], (name, request)
    assert limit == row["limit"], (name, limit)
    assert quantity(request) >= mib(row["idle"]), f"{name} requests {request}, less than its idle {row['idle']}"
    if row["peak"]:
        assert quantity(limit) >= mib(row["peak"]), f"{name}'s limit {limit} is below its measured peak"
