"""The scheduler's Prometheus metrics, and Chaos Mesh's controller-manager names for the same
counts (docs/observability.md), so that dashboards and alerts written for Chaos Mesh work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from chaosbus.common.metrics import SnapshotGauge

# Chaos Mesh's experiment phases are injecting, running, finished, paused and deleting. Ours add
# recovering and failed (selection failed); Chaos Mesh derives its phase from the records'
# conditions, where both show as injecting (neither all injected nor all recovered).
CHAOS_MESH_PHASE = {
    "injecting": "injecting",
    "running": "running",
    "finished": "finished",
    "paused": "paused",
    "deleting": "deleting",
    "recovering": "injecting",
    "failed": "injecting",
}


class SchedulerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.experiments = SnapshotGauge(
            "chaosbus_experiments", "Experiments by kind and phase", ["kind", "phase"], self.registry
        )
        self.commands = Counter(
            "chaosbus_scheduler_commands_sent_total", "Node commands sent", ["kind"], registry=self.registry
        )
        self.actions = Counter(
            "chaosbus_scheduler_target_actions_total", "Per-target actions sent", ["kind", "op"], registry=self.registry
        )
        self.decisions = Counter("chaosbus_scheduler_decisions_total", "Decisions published", registry=self.registry)
        self.errors = Counter("chaosbus_scheduler_errors_total", "Errors by reason", ["reason"], registry=self.registry)
        self.memory_writes = Counter(
            "chaosbus_scheduler_memory_writes_total",
            "Experiment memories written to (or purged from) KV scheduler",
            registry=self.registry,
        )
        self.object_writes = Counter(
            "chaosbus_scheduler_object_writes_total",
            "ObjectWrites sent (Schedule children, orchestration status) by op and reason",
            ["op", "reason"],
            registry=self.registry,
        )
        self.workflows = Gauge(
            "chaosbus_workflows",
            "Workflows by phase (running, accomplished, aborted, invalid)",
            ["phase"],
            registry=self.registry,
        )
        self.probes = Counter(
            "chaosbus_scheduler_status_check_probes_total",
            "StatusCheck probes by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "chaosbus_scheduler_leader", "1 while this instance holds the leader lease", registry=self.registry
        )
        # Chaos Mesh's names (pkg/metrics of chaos-controller-manager), same labels and meaning.
        self.cm_experiments = SnapshotGauge(
            "chaos_controller_manager_chaos_experiments",
            "Total number of chaos experiments and their phases",
            ["namespace", "kind", "phase"],
            self.registry,
        )
        self.cm_schedules = SnapshotGauge(
            "chaos_controller_manager_chaos_schedules", "Total number of chaos schedules", ["namespace"], self.registry
        )
        self.cm_workflows = SnapshotGauge(
            "chaos_controller_manager_chaos_workflows", "Total number of chaos workflows", ["namespace"], self.registry
        )

    def set_experiments(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        """Both experiment gauges from counts by (namespace, kind, phase)."""
        ours: dict[tuple[str, ...], float] = {}
        theirs: dict[tuple[str, ...], float] = {}
        for (namespace, kind, phase), n in counts.items():
            ours[(kind, phase)] = ours.get((kind, phase), 0) + n
            key = (namespace, kind, CHAOS_MESH_PHASE.get(phase, phase))
            theirs[key] = theirs.get(key, 0) + n
        self.experiments.set_all(ours)
        self.cm_experiments.set_all(theirs)


def by_namespace(namespaces: Iterable[str]) -> dict[tuple[str, ...], float]:
    counts: dict[tuple[str, ...], float] = {}
    for ns in namespaces:
        counts[(ns,)] = counts.get((ns,), 0) + 1
    return counts
