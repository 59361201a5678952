"""The injector's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from chaosbus.common.metrics import SnapshotGauge

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SWEEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class InjectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "chaosbus_injector_commands_handled_total", "Node commands handled", ["kind"], registry=self.registry
        )
        self.latency = Histogram(
            "chaosbus_injector_action_seconds",
            "Apply/recover time per target",
            ["fault", "op"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "chaosbus_injector_errors_total",
            "Failed target actions by reason",
            ["fault", "op", "reason"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "chaosbus_injector_refused_total",
            "Applies refused by the injector's own target checks (docs/security.md)",
            ["fault"],
            registry=self.registry,
        )
        # Read back from the kernel (drops.py): what each partition experiment's tables dropped.
        self.dropped_packets = SnapshotGauge(
            "chaosbus_injector_partition_dropped_packets",
            "Packets dropped by each partition's nft tables on this node",
            ["namespace", "name"],
            self.registry,
        )
        self.dropped_bytes = SnapshotGauge(
            "chaosbus_injector_partition_dropped_bytes",
            "Bytes dropped by each partition's nft tables on this node",
            ["namespace", "name"],
            self.registry,
        )
        # Read back from the kernel and /proc (readback.py): what each experiment has in force now.
        self.qdiscs = SnapshotGauge(
            "chaosbus_injector_qdiscs_installed",
            "netem/tbf qdiscs the kernel has for each NetworkChaos shaping experiment",
            ["namespace", "name"],
            self.registry,
        )
        self.stressors = SnapshotGauge(
            "chaosbus_injector_stressors_running",
            "Live stress-ng processes of each StressChaos experiment",
            ["namespace", "name"],
            self.registry,
        )
        self.skewed = SnapshotGauge(
            "chaosbus_injector_skewed_processes",
            "Processes whose vDSO each TimeChaos experiment has patched now",
            ["namespace", "name"],
            self.registry,
        )
        # Node health: how fresh the scheduler's lease is and how many faults the journal holds open.
        self.lease_age = Gauge(
            "chaosbus_injector_lease_age_seconds",
            "Seconds since the scheduler's last lease reached this node (-1: none yet)",
            registry=self.registry,
        )
        self.open_faults = Gauge(
            "chaosbus_injector_open_faults", "Faults the node journal holds open", registry=self.registry
        )
        # The orphan sweeper (sweeper.py): what it removed, and what it could not, by what it is.
        self.orphans_removed = Counter(
            "chaosbus_injector_orphans_removed_total",
            "Orphans the sweeper removed (belonging to no open journal entry), by what they were",
            ["what"],
            registry=self.registry,
        )
        self.sweep_seconds = Histogram(
            "chaosbus_injector_sweep_seconds",
            "Wall time of one orphan sweep (every netns in its scope, helpers, state files)",
            buckets=_SWEEP_BUCKETS,
            registry=self.registry,
        )
        self.sweep_errors = Counter(
            "chaosbus_injector_sweep_errors_total",
            "Orphans the sweeper found but could not remove, or places it could not read",
            ["what"],
            registry=self.registry,
        )
