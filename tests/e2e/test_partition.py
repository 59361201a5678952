"""NetworkChaos partition end to end: the four-pod connectivity matrix (as Chaos Mesh's own e2e),
recovery by deletion, duration and pause, and composition of two experiments on one pod.
"""

from __future__ import annotations

import pytest
import yaml
from helpers.live import System, eventually, wait_blocked

pytestmark = pytest.mark.privileged


def partition(
    name: str,
    *,
    source: str,
    direction: str,
    target: str | None = None,
    duration: str | None = None,
    source_key: str = "metadata.name",
) -> str:
    """A partition from the pods matching source_key=source; target is `name` or `label=value`."""
    field = "fieldSelectors" if source_key.startswith("metadata.") else "labelSelectors"
    spec: dict[str, object] = {
        "action": "partition",
        "mode": "all",
        "direction": direction,
        "selector": {field: {source_key: source}},
    }
    if target:
        key, value = target.split("=") if "=" in target else ("metadata.name", target)
        tfield = "fieldSelectors" if key.startswith("metadata.") else "labelSelectors"
        spec["target"] = {"mode": "all", "selector": {tfield: {key: value}}}
    if duration:
        spec["duration"] = duration
    return yaml.safe_dump(
        {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos", "metadata": {"name": name}, "spec": spec}
    )


@pytest.mark.parametrize(
    ("direction", "expected"),
    [
        ("to", {(0, 1)}),
        ("from", {(1, 0)}),
        ("both", {(0, 1), (1, 0)}),
    ],
)
def test_direction_blocks_exactly_the_partitioned_pairs(
    system: System, direction: str, expected: set[tuple[int, int]]
) -> None:
    system.cli(
        "apply", "-f", "-", stdin=partition(f"p-{direction}", source="peer-0", direction=direction, target="peer-1")
    )
    wait_blocked(system, expected)
    system.cli("delete", "networkchaos", f"p-{direction}")
    wait_blocked(system, set())


def test_label_groups_partition_every_crossing_pair(system: System) -> None:
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=partition("p-groups", source="a", source_key="group", direction="both", target="group=b"),
    )
    crossing = {(i, j) for i in range(4) for j in range(4) if i % 2 != j % 2}
    wait_blocked(system, crossing)
    system.cli("delete", "networkchaos", "p-groups")
    wait_blocked(system, set())


def test_no_target_to_blocks_the_source_towards_everyone(system: System) -> None:
    system.cli("apply", "-f", "-", stdin=partition("p-all", source="peer-0", direction="to"))
    wait_blocked(system, {(0, 1), (0, 2), (0, 3)})
    system.cli("delete", "networkchaos", "p-all")
    wait_blocked(system, set())


def test_duration_expiry_recovers_and_status_says_finished(system: System) -> None:
    # The duration runs from the object's creation: the injection's path (watcher, scheduler,
    # injector) and each probe of every pair come out of it, so it leaves a loaded machine room to
    # see the partition before it ends.
    system.cli(
        "apply", "-f", "-", stdin=partition("p-short", source="peer-2", direction="to", target="peer-3", duration="8s")
    )
    wait_blocked(system, {(2, 3)}, timeout=8)
    wait_blocked(system, set(), timeout=15)
    status = eventually(lambda: (system.get("networkchaos", "p-short") or {}).get("status"))

    def finished() -> bool:
        st = (system.get("networkchaos", "p-short") or {}).get("status") or {}
        conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
        return st.get("experiment", {}).get("desiredPhase") == "Stop" and conds.get("AllRecovered") == "True"

    eventually(finished, timeout=15)
    records = system.get("networkchaos", "p-short")["status"]["experiment"]["containerRecords"]  # type: ignore[index]
    assert {(r["id"], r["selectorKey"], r["phase"]) for r in records} == {
        ("default/peer-2", ".", "Not Injected"),
        ("default/peer-3", ".Target", "Not Injected"),
    }
    assert all(r["injectedCount"] == 1 and r["recoveredCount"] == 1 for r in records)
    assert status
    system.cli("delete", "networkchaos", "p-short")


def test_pause_recovers_and_unpause_reinjects(system: System) -> None:
    system.cli("apply", "-f", "-", stdin=partition("p-pause", source="peer-1", direction="to", target="peer-2"))
    wait_blocked(system, {(1, 2)})
    system.cli("annotate", "networkchaos", "p-pause", "experiment.chaos-mesh.org/pause=true")
    wait_blocked(system, set())

    def paused() -> bool:
        st = (system.get("networkchaos", "p-pause") or {}).get("status") or {}
        return {c["type"]: c["status"] for c in st.get("conditions", [])}.get("Paused") == "True"

    eventually(paused)
    system.cli("annotate", "networkchaos", "p-pause", "experiment.chaos-mesh.org/pause-")
    wait_blocked(system, {(1, 2)})
    system.cli("delete", "networkchaos", "p-pause")
    wait_blocked(system, set())


def test_two_partitions_on_one_pod_compose_and_recover_independently(system: System) -> None:
    system.cli("apply", "-f", "-", stdin=partition("p-one", source="peer-0", direction="to", target="peer-1"))
    system.cli("apply", "-f", "-", stdin=partition("p-two", source="peer-0", direction="to", target="peer-2"))
    wait_blocked(system, {(0, 1), (0, 2)})
    system.cli("delete", "networkchaos", "p-one")
    wait_blocked(system, {(0, 2)})
    system.cli("delete", "networkchaos", "p-two")
    wait_blocked(system, set())
