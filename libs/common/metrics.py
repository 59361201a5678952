"""Serving a service's own Prometheus registry over HTTP (each service declares its metrics)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


def serve(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> int:
    """Start /metrics on addr:port (0 picks a free port); return the port actually bound."""
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return int(server.server_address[1])


class SnapshotGauge(Collector):
    """A gauge whose whole set of series is replaced at once: a label set that no longer counts
    anything disappears (as Chaos Mesh resets its gauges before each collection), and a scrape
    sees either the old set or the new one, never half of each.
    """

    def __init__(self, name: str, documentation: str, labels: list[str], registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def set_all(self, values: Mapping[tuple[str, ...], float]) -> None:
        self.values = dict(values)  # one reference swap, read by the HTTP thread

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self.values.items():
            family.add_metric(list(labels), value)
        yield family

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
