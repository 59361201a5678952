"""The dashboard's Prometheus metrics: requests by route and status, live-update connections,
logins, and writes by action (served on their own port, as every service's are)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

WRITE_ACTIONS = ("create", "pause", "resume", "delete", "halt", "release")
LOGIN_OUTCOMES = ("admin", "viewer", "refused")


class DashboardMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # `route` is the matched route's pattern (`/experiments/{kind}/{ns}/{name}`), never the
        # path itself: names in paths would make one series per object.
        self.requests = Counter(
            "chaosbus_dashboard_requests_total",
            "HTTP requests by route pattern, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.live = Gauge(
            "chaosbus_dashboard_live_connections",
            "Browsers following live updates (/live) now",
            registry=self.registry,
        )
        self.logins = Counter(
            "chaosbus_dashboard_logins_total",
            "Logins by outcome: the role logged in as, or refused (a wrong token)",
            ["outcome"],
            registry=self.registry,
        )
        self.writes = Counter(
            "chaosbus_dashboard_writes_total",
            "Changes asked for from the page, by action and outcome (done, refused)",
            ["action", "outcome"],
            registry=self.registry,
        )
        for outcome in LOGIN_OUTCOMES:
            self.logins.labels(outcome)
        for action in WRITE_ACTIONS:
            for outcome in ("done", "refused"):
                self.writes.labels(action, outcome)
