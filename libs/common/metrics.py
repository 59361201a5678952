"""Serving a service's own Prometheus registry over HTTP (each service declares its metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server


def serve(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> int:
    """Start /metrics on addr:port (0 picks a free port); return the port actually bound."""
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return int(server.server_address[1])
