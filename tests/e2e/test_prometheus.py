"""A real Prometheus scrapes a live local system and a `chaosbus dashboard`: with the configuration
`chaosbus prometheus-config` recommends (docs/observability.md, plus the dashboard's job) and with
the pod annotations of deploy/k8s translated to a static configuration, every service's job is up
and its chaosbus_* series arrive; Chaos Mesh's metric names come through beside ours during a live
experiment, and the dashboard's refused logins reach Prometheus.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import prom
from helpers.live import System, eventually, wait_blocked

from chaosbus.cli import promconfig
from chaosbus.cli.up import METRICS_PORTS, SERVICES
from chaosbus.dashboard.__main__ import METRICS_PORT as DASHBOARD_METRICS_PORT

pytestmark = pytest.mark.privileged

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# The workloads whose pods run each local-mode service (the cluster injector is the injector's
# cluster-scoped twin: one process serves both roles locally).
WORKLOADS = {
    "watcher.yaml": "watcher",
    "scheduler.yaml": "scheduler",
    "recorder.yaml": "recorder",
    "injector.yaml": "injector",
    "cluster-injector.yaml": "injector",
    "dashboard.yaml": "dashboard",
}
DEFAULT_PORTS = {**METRICS_PORTS, "dashboard": DASHBOARD_METRICS_PORT}


def live_ports(system: System) -> dict[str, int]:
    ports = system.metrics_ports()
    assert set(ports) == set(SERVICES), ports
    return ports


def annotation_jobs(ports: dict[str, int]) -> list[dict[str, Any]]:
    """deploy/k8s's prometheus.io/* pod annotations as static jobs: the annotated path, and the
    annotated port mapped to where that service listens on this machine.
    """
    jobs = []
    for file, service in WORKLOADS.items():
        for doc in yaml.safe_load_all((DEPLOY / file).read_text()):
            if not doc or doc.get("kind") not in ("Deployment", "DaemonSet", "StatefulSet"):
                continue
            tmpl = doc["spec"]["template"]["metadata"]
            ann = tmpl.get("annotations") or {}
            assert ann.get("prometheus.io/scrape") == "true", (file, ann)
            # The annotation must name the port the service serves by default (its --metrics-port).
            assert int(ann["prometheus.io/port"]) == DEFAULT_PORTS[service], (file, ann)
            jobs.append(
                {
                    "job_name": f"k8s-{doc['metadata']['name']}",
                    "metrics_path": ann["prometheus.io/path"],
                    "static_configs": [{"targets": [f"127.0.0.1:{ports[service]}"], "labels": {"service": service}}],
                }
            )
    assert {j["static_configs"][0]["labels"]["service"] for j in jobs} == {*SERVICES, "dashboard"}, jobs
    return jobs


@pytest.fixture(scope="module")
def dashboard(system: System, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A dashboard on free ports: its URL and its /metrics port (from its start-up log line)."""
    tmp = tmp_path_factory.mktemp("dashboard")
    url_file, log = tmp / "url", tmp / "dashboard.log"
    argv = [
        sys.executable,
        "-m",
        "chaosbus.dashboard",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--url-file",
        str(url_file),
    ]
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, env=system.env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        eventually(lambda: url_file.exists() and url_file.read_text().strip(), timeout=60)
        yield url_file.read_text().strip().rstrip("/"), _logged_metrics_port(log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _logged_metrics_port(log: Path) -> int:
    for line in log.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("metrics_port"):
            return int(rec["metrics_port"])
    raise AssertionError(f"no metrics_port in {log.read_text()}")


@pytest.fixture(scope="module")
def prometheus(
    system: System, dashboard: tuple[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[prom.Prometheus]:
    if prom.unavailable():
        pytest.skip(prom.unavailable() or "")
    ports = {**live_ports(system), "dashboard": dashboard[1]}
    # As `chaosbus prometheus-config --dashboard-port N` prints it: the services' jobs and the dashboard's.
    config = promconfig.scrape_config(ports, interval="1s")
    config["scrape_configs"] += annotation_jobs(ports)
    with prom.running(config, tmp_path_factory.mktemp("prometheus")) as p:
        yield p


def partition(name: str, namespace: str = "default") -> str:
    """peer-2 cannot reach peer-3; the experiment may live in another namespace than the pods."""

    def pod(pod_name: str) -> dict[str, Any]:
        return {"namespaces": ["default"], "fieldSelectors": {"metadata.name": pod_name}}

    return yaml.safe_dump(
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "NetworkChaos",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "action": "partition",
                "mode": "all",
                "direction": "to",
                "selector": pod("peer-2"),
                "target": {"mode": "all", "selector": pod("peer-3")},
            },
        }
    )


def test_every_service_is_scraped_with_its_series(system: System, prometheus: prom.Prometheus) -> None:
    # A live experiment, so that every service has done something worth a series.
    system.cli("apply", "-f", "-", stdin=partition("prom-series"))
    try:
        wait_blocked(system, {(2, 3)})
        jobs = [f"chaosbus-{s}" for s in (*SERVICES, "dashboard")] + [
            f"k8s-{d['metadata']['name']}"
            for f in WORKLOADS
            for d in yaml.safe_load_all((DEPLOY / f).read_text())
            if d and d.get("kind") in ("Deployment", "DaemonSet", "StatefulSet")
        ]

        def all_up() -> dict[str, str]:
            up = {r["metric"]["job"]: r["value"][1] for r in prometheus.query("up")}
            return up if all(up.get(j) == "1" for j in jobs) else {}

        eventually(all_up, timeout=20, interval=0.5)

        def series_per_job() -> dict[str, int]:
            found = {
                r["metric"]["job"]: int(r["value"][1])
                for r in prometheus.query('count by (job) ({__name__=~"chaosbus_.+"})')
            }
            return found if all(found.get(j, 0) > 0 for j in jobs) else {}

        found = eventually(series_per_job, timeout=20, interval=0.5)
        assert set(found) >= set(jobs), found
    finally:
        system.cli("delete", "networkchaos", "prom-series")
        wait_blocked(system, set())


def test_chaos_mesh_experiment_gauge_shows_a_running_partition(system: System, prometheus: prom.Prometheus) -> None:
    # A namespace of its own, so that no other experiment of the session counts in these series.
    # The recommended job only: the annotation-derived one scrapes the same scheduler again.
    ns, job = "prom-cm", "chaosbus-scheduler"
    expr = (
        f'chaos_controller_manager_chaos_experiments{{job="{job}",namespace="{ns}",'
        'kind="NetworkChaos",phase="running"}'
    )

    def running() -> float:
        return sum(float(r["value"][1]) for r in prometheus.query(expr))

    assert running() == 0
    system.cli("apply", "-f", "-", stdin=partition("prom-cm", ns))
    try:
        wait_blocked(system, {(2, 3)})
        eventually(lambda: running() == 1, timeout=20, interval=0.5)
        # The same experiment under our own name, and Events counted under Chaos Mesh's.
        assert prometheus.query(f'chaosbus_experiments{{job="{job}",kind="NetworkChaos",phase="running"}} >= 1')
        eventually(
            lambda: prometheus.query(f'chaos_controller_manager_emitted_event_total{{namespace="{ns}"}}'),
            timeout=20,
            interval=0.5,
        )
    finally:
        system.cli("delete", "networkchaos", "prom-cm", "-n", ns)
        wait_blocked(system, set())
    # Deleted: its running series is gone again (no stale phase left behind).
    eventually(
        lambda: not prometheus.query(f'chaos_controller_manager_chaos_experiments{{namespace="{ns}"}}'),
        timeout=20,
        interval=0.5,
    )


def test_packets_dropped_by_a_partition_rise_in_prometheus(system: System, prometheus: prom.Prometheus) -> None:
    ns = "prom-drops"
    expr = f'chaosbus_injector_partition_dropped_packets{{job="chaosbus-injector",namespace="{ns}",name="prom-drops"}}'

    def dropped() -> float:
        return sum(float(r["value"][1]) for r in prometheus.query(expr))

    system.cli("apply", "-f", "-", stdin=partition("prom-drops", ns))
    try:
        wait_blocked(system, {(2, 3)})  # each probe's SYNs die in peer-2's output chain
        first = eventually(dropped, timeout=20, interval=0.5)
        for _ in range(5):
            assert not system.connects(2, 3)
        eventually(lambda: dropped() > first, timeout=20, interval=0.5)
        assert prometheus.query(
            f'chaosbus_injector_partition_dropped_bytes{{job="chaosbus-injector",namespace="{ns}"}} > 0'
        )
    finally:
        system.cli("delete", "networkchaos", "prom-drops", "-n", ns)
        wait_blocked(system, set())
    eventually(lambda: not prometheus.query(expr), timeout=20, interval=0.5)


def test_the_dashboards_refused_logins_reach_prometheus(
    dashboard: tuple[str, int], prometheus: prom.Prometheus
) -> None:
    url, _ = dashboard
    expr = 'chaosbus_dashboard_logins_total{job="chaosbus-dashboard",outcome="refused"}'

    def refused() -> float:
        return sum(float(r["value"][1]) for r in prometheus.query(expr))

    eventually(lambda: prometheus.query(expr), timeout=60, interval=0.5)  # the series, at 0 from the start
    before = refused()
    data = urllib.parse.urlencode({"token": "a guess"}).encode()
    try:
        urllib.request.urlopen(urllib.request.Request(url + "/login", data=data), timeout=60)
        raise AssertionError("a wrong token logged in")
    except urllib.error.HTTPError as e:
        assert e.code == 401
    eventually(lambda: refused() == before + 1, timeout=60, interval=0.5)
    route = 'chaosbus_dashboard_requests_total{job="chaosbus-dashboard",route="/login",method="POST",status="401"}'
    # Counted once the response is made, half a second after the login (a wrong token costs time).
    eventually(lambda: prometheus.query(route), timeout=60, interval=0.5)
