"""Serving a service's own Prometheus registry over HTTP (each service declares its metrics)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


def serve(
    registry: CollectorRegistry, port: int, addr: str = "127.0.0.1", *, ready: Callable[[], str] | None = None
) -> int:
    """Start /metrics on addr:port (0 picks a free port); return the port actually bound. With
    `ready`, /readyz answers 200 while it returns "" and 503 with what it returns otherwise (a
    readiness probe for a service whose only HTTP port this is).
    """
    if ready is None:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
        return int(server.server_address[1])
    metrics = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/readyz":
            served: Iterable[bytes] = metrics(environ, start_response)
            return served
        why = ready()
        start_response("503 Service Unavailable" if why else "200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return [(why or "ready").encode()]

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a request thread never holds the process up
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET

    httpd = make_server(addr, port, app, Server, handler_class=_Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True, name="metrics").start()
    return int(httpd.server_address[1])


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Probes and scrapes are not worth a log line each."""


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
