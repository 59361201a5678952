"""The experiment gauges: ours and Chaos Mesh's name for the same count, with nothing stale."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chaosbus.scheduler.metrics import SchedulerMetrics, by_namespace


def exposed(metrics: SchedulerMetrics) -> dict[str, float]:
    """Every sample of the scrape as name{label="value",...} with the labels in sorted order."""
    return {
        sample.name
        + (
            "{" + ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items())) + "}" if sample.labels else ""
        ): sample.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
    }


def test_counts_by_namespace_feed_both_names_with_chaos_mesh_phases() -> None:
    metrics = SchedulerMetrics()
    metrics.set_experiments(
        {
            ("default", "NetworkChaos", "running"): 2,
            ("team", "NetworkChaos", "recovering"): 1,
            ("team", "NetworkChaos", "failed"): 1,
        }
    )
    got = exposed(metrics)
    assert got['chaosbus_experiments{kind="NetworkChaos",phase="running"}'] == 2
    assert got['chaosbus_experiments{kind="NetworkChaos",phase="recovering"}'] == 1
    cm = "chaos_controller_manager_chaos_experiments"
    assert got[f'{cm}{{kind="NetworkChaos",namespace="default",phase="running"}}'] == 2
    # Neither wholly injected nor wholly recovered: Chaos Mesh calls both injecting.
    assert got[f'{cm}{{kind="NetworkChaos",namespace="team",phase="injecting"}}'] == 2


def test_a_phase_nobody_is_in_any_more_disappears() -> None:
    metrics = SchedulerMetrics()
    metrics.set_experiments({("default", "PodChaos", "injecting"): 1})
    metrics.set_experiments({("default", "PodChaos", "running"): 1})
    got = exposed(metrics)
    assert not [k for k in got if 'phase="injecting"' in k], got
    assert got['chaosbus_experiments{kind="PodChaos",phase="running"}'] == 1


def test_schedules_and_workflows_count_per_namespace() -> None:
    metrics = SchedulerMetrics()
    metrics.cm_schedules.set_all(by_namespace(["a", "a", "b"]))
    metrics.cm_workflows.set_all(by_namespace([]))
    got = exposed(metrics)
    assert got['chaos_controller_manager_chaos_schedules{namespace="a"}'] == 2
    assert got['chaos_controller_manager_chaos_schedules{namespace="b"}'] == 1
    assert not [k for k in got if k.startswith("chaos_controller_manager_chaos_workflows")]
