"""The watcher's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class WatcherMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "chaosbus_watcher_object_events_total", "Object events published", ["kind", "type"], registry=self.registry
        )
        self.targets = Counter(
            "chaosbus_watcher_target_updates_total", "Target projection writes", ["op"], registry=self.registry
        )
        self.errors = Counter("chaosbus_watcher_errors_total", "Errors by reason", ["reason"], registry=self.registry)
