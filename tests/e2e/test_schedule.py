"""Schedule end to end on the live local-mode system: `@every 2s` with Forbid spawning a short
NetworkChaos partition fires the expected number of times, children never overlap (the matrix
and their status say so), old children are trimmed to historyLimit, and deleting the Schedule
deletes its children and leaves no fault.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from helpers.live import System, eventually, wait_blocked

pytestmark = pytest.mark.privileged


def schedule(name: str, *, every: str = "@every 2s", history: int = 2) -> str:
    partition = {"action": "partition", "mode": "all", "direction": "to", "duration": "1s",
                 "selector": {"fieldSelectors": {"metadata.name": "peer-2"}},
                 "target": {"mode": "all", "selector": {"fieldSelectors": {"metadata.name": "peer-3"}}}}
    return yaml.safe_dump({"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "Schedule", "metadata": {"name": name},
                           "spec": {"schedule": every, "type": "NetworkChaos", "historyLimit": history,
                                    "concurrencyPolicy": "Forbid", "networkChaos": partition}})


def children(system: System, owner: str) -> list[dict[str, Any]]:
    done = system.cli("get", "networkchaos", "-o", "json")
    items = yaml.safe_load(done.stdout) or []
    items = items if isinstance(items, list) else items.get("items", [items])
    return [o for o in items if (o["metadata"].get("labels") or {}).get("managed-by") == owner]


def injected(obj: dict[str, Any]) -> bool:
    records = ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []
    return any(r["phase"].startswith("Injected") for r in records)


def test_every_2s_forbid_fires_on_time_never_overlaps_trims_and_cleans_up(system: System) -> None:
    system.cli("apply", "-f", "-", stdin=schedule("sched-part"))
    created = time.monotonic()
    seen: dict[str, float] = {}  # child name -> when first seen
    most_at_once = 0
    samples: list[bool] = []  # peer-2 -> peer-3 blocked, sampled
    last: dict[str, dict[str, Any]] = {}
    while time.monotonic() - created < 9.0:
        kids = children(system, "sched-part")
        for kid in kids:
            seen.setdefault(kid["metadata"]["name"], time.monotonic() - created)
            last[kid["metadata"]["name"]] = kid
        most_at_once = max(most_at_once, sum(injected(k) for k in kids))
        assert len(kids) <= 2 + 1, [k["metadata"]["name"] for k in kids]  # historyLimit (+1 being trimmed)
        for _ in range(5):
            samples.append(not system.connects(2, 3))
            time.sleep(0.05)
    fires = sorted(int(n.rsplit("-", 1)[1]) for n in seen)
    assert 3 <= len(fires) <= 5, seen  # 4 expected in 9 s, +-1 for where the window falls
    assert all(b - a == 2 for a, b in zip(fires, fires[1:], strict=False)), fires  # one child per fire, none skipped
    assert most_at_once <= 1
    counts = [(r["injectedCount"], r["recoveredCount"]) for kid in last.values() if not injected(kid)
              for r in ((kid.get("status") or {}).get("experiment") or {}).get("containerRecords") or []]
    assert (1, 1) in counts, counts  # children were injected and recovered, each once
    assert any(samples) and not all(samples), samples  # the partition came and went

    status = eventually(lambda: (system.get("schedule", "sched-part") or {}).get("status"))
    assert status.get("time") and 1 <= len(status.get("active") or []) <= 3

    system.cli("delete", "schedule", "sched-part")
    eventually(lambda: children(system, "sched-part") == [], timeout=15)
    wait_blocked(system, set(), timeout=8)


def test_an_invalid_schedule_is_refused_at_apply_naming_the_field(system: System) -> None:
    done = system.cli("apply", "-f", "-", stdin=schedule("sched-bad", every="61 * * * *"), check=False)
    assert done.returncode != 0 and "spec.schedule: invalid cron expression" in done.stdout + done.stderr
