"""The recorder's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class RecorderMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.writes = Counter(
            "chaosbus_recorder_status_writes_total", "Status writes", ["kind", "cause"], registry=self.registry
        )
        self.finalizers = Counter(
            "chaosbus_recorder_finalizer_changes_total", "Finalizer adds/removes", ["op"], registry=self.registry
        )
        self.results = Counter(
            "chaosbus_recorder_target_results_total",
            "Per-target results recorded",
            ["kind", "op", "outcome"],
            registry=self.registry,
        )
        self.refused = Counter(
            "chaosbus_recorder_results_refused_total",
            "Per-target results refused: from another node than the target's, or on another node's subject",
            ["reason"],
            registry=self.registry,
        )
        self.errors = Counter("chaosbus_recorder_errors_total", "Errors by reason", ["reason"], registry=self.registry)
        # Chaos Mesh's name (chaos-controller-manager) for the Events written about chaos objects.
        self.emitted_events = Counter(
            "chaos_controller_manager_emitted_event_total",
            "Total number of the emitted event by chaos-controller-manager",
            ["type", "reason", "namespace"],
            registry=self.registry,
        )

    def event(self, type_: str, reason: str, namespace: str) -> None:
        self.emitted_events.labels(type_, reason, namespace).inc()
