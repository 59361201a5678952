"""NetworkChaos bandwidth end to end: `chaosbus apply` -> scheduler -> injector -> tbf in the pod's
netns caps real TCP towards the target only; status says Injected with what was installed; delete
lifts the cap and leaves the device as it was. Also: a netem action on this kernel fails per target
with the reason and never touches the device.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from helpers.goodput import goodput, sinks
from helpers.live import System, eventually

from chaosbus.injector.backends import tc

pytestmark = pytest.mark.privileged

MBIT = 1_000_000


def bandwidth(name: str, rate: str, source: str, target: str | None, direction: str = "to") -> str:
    spec: dict[str, Any] = {
        "action": "bandwidth",
        "mode": "all",
        "direction": direction,
        "selector": {"fieldSelectors": {"metadata.name": source}},
        "bandwidth": {"rate": rate, "limit": 20000, "buffer": 10000},
    }
    if target:
        spec["target"] = {"mode": "all", "selector": {"fieldSelectors": {"metadata.name": target}}}
    return yaml.safe_dump(
        {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos", "metadata": {"name": name}, "spec": spec}
    )


def records(system: System, name: str) -> list[dict[str, Any]]:
    obj = system.get("networkchaos", name) or {}
    return ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []


def all_injected(system: System, name: str, count: int) -> list[dict[str, Any]] | None:
    recs = records(system, name)
    return recs if len(recs) == count and all(r["phase"] == "Injected" for r in recs) else None


@pytest.fixture(scope="module")
def sink(system: System) -> Iterator[dict[int, subprocess.Popen[str]]]:
    with sinks({i: p.netns_path for i, p in enumerate(system.pods)}) as procs:
        yield procs


def rate(system: System, sink: dict[int, subprocess.Popen[str]], src: int, dst: int, seconds: float = 2.5) -> float:
    return goodput(system.pods[src].netns_path, sink[dst], system.pods[dst].ip, seconds=seconds)


def qdiscs(system: System, name: str) -> float | None:
    """The injector's read-back of the experiment's qdiscs in the kernel; None: no series."""
    found = system.samples("injector", "chaosbus_injector_qdiscs_installed", namespace="default", name=name)
    return sum(found) if found else None


def our_qdiscs(netns_path: str, kind: str) -> int:
    return sum(1 for f in tc.list_ours(netns_path) if f.what == "qdisc" and f.kind == kind)


def test_bandwidth_caps_only_towards_the_target_until_deleted(
    system: System, sink: dict[int, subprocess.Popen[str]]
) -> None:
    assert tc.list_ours(system.pods[0].netns_path) == []
    system.cli("apply", "-f", "-", stdin=bandwidth("bw-1mbit", "1mbit", "peer-0", "peer-1"))
    recs = eventually(lambda: all_injected(system, "bw-1mbit", 2), timeout=15)
    events = {r["selectorKey"]: r["events"][-1]["message"] for r in recs}
    assert "bandwidth applied on eth0: tbf rate 1,000,000 bit/s" in events["."]
    assert "nothing to shape on this side" in events[".Target"]  # direction to: only the source's egress
    capped = rate(system, sink, 0, 1)
    other = rate(system, sink, 0, 2, seconds=1)
    print(f"\ne2e 1mbit: peer-0 -> peer-1 {capped / MBIT:.3f} Mbit/s, peer-0 -> peer-2 {other / MBIT:.0f} Mbit/s")
    assert abs(capped - MBIT) <= 0.2 * MBIT and other > 20 * MBIT
    # Read back from the kernel: the one tbf on peer-0's eth0 (the target side shapes nothing).
    assert our_qdiscs(system.pods[0].netns_path, "tbf") == 1
    eventually(lambda: qdiscs(system, "bw-1mbit") == 1, timeout=10)
    system.cli("delete", "networkchaos", "bw-1mbit")
    assert tc.list_ours(system.pods[0].netns_path) == []
    eventually(lambda: qdiscs(system, "bw-1mbit") is None, timeout=10)
    assert rate(system, sink, 0, 1, seconds=1) > 20 * MBIT


def test_both_directions_shape_each_side_towards_the_other(
    system: System, sink: dict[int, subprocess.Popen[str]]
) -> None:
    system.cli("apply", "-f", "-", stdin=bandwidth("bw-both", "2mbit", "peer-2", "peer-3", direction="both"))
    eventually(lambda: all_injected(system, "bw-both", 2), timeout=15)
    eventually(lambda: qdiscs(system, "bw-both") == 2, timeout=10)  # a tbf on each side
    there, back = rate(system, sink, 2, 3), rate(system, sink, 3, 2)
    assert abs(there - 2 * MBIT) <= 0.4 * MBIT and abs(back - 2 * MBIT) <= 0.4 * MBIT
    system.cli("delete", "networkchaos", "bw-both")
    assert tc.list_ours(system.pods[2].netns_path) == [] and tc.list_ours(system.pods[3].netns_path) == []
