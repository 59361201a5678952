"""Every PromQL expression of deploy/grafana/chaosbus.json (panel targets and the Events
annotation) returns series from a real Prometheus scraping a live system and an SLO guard while
experiments of every read-back kind run: a partition, a bandwidth cap, a stressor and a clock
skew, after one experiment was recovered.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from helpers import grafana, prom
from helpers.live import System, eventually, wait_blocked

from chaosbus.cli import promconfig
from chaosbus.injector.backends import timeskew

# Beyond the default 120 s: the first test of a worker also pays for the live system's start (a
# nats-server, four services, four pods) and its Prometheus, which take a minute or more on a
# loaded 2-core machine; on an idle one each test takes 20-60 s.
pytestmark = [pytest.mark.privileged, pytest.mark.timeout(300)]

NS = "grafana"  # the experiments' own namespace: the dashboard's $namespace selects it
KINDS = {"NetworkChaos": "networkchaos", "StressChaos": "stresschaos", "TimeChaos": "timechaos"}


@pytest.fixture(scope="module")
def prometheus(system: System, tmp_path_factory: pytest.TempPathFactory) -> Iterator[prom.Prometheus]:
    if prom.unavailable():
        pytest.skip(prom.unavailable() or "")
    config = promconfig.scrape_config(system.metrics_ports(), interval="1s")
    guard_port = prom.free_port()
    config["scrape_configs"].append(
        {"job_name": "chaosbus-guard", "static_configs": [{"targets": [f"127.0.0.1:{guard_port}"]}]}
    )
    with prom.running(config, tmp_path_factory.mktemp("prometheus-grafana")) as p:
        # A guard whose objective always holds (it never halts), for the dashboard's guard panel.
        guard = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chaosbus.cli",
                "guard",
                "--name",
                "always-met",
                "--prometheus",
                p.url,
                "--query",
                "vector(1)",
                "--criteria",
                "==",
                "--value",
                "1",
                "--interval",
                "1",
                "--metrics-port",
                str(guard_port),
            ],
            env=system.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield p
        finally:
            guard.terminate()
            guard.wait(20)


def pod(name: str) -> dict[str, Any]:
    return {"namespaces": ["default"], "fieldSelectors": {"metadata.name": name}}


def doc(kind: str, name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        }
    )


EXPERIMENTS = {
    ("NetworkChaos", "gf-partition"): {
        "action": "partition",
        "mode": "all",
        "direction": "to",
        "selector": pod("peer-2"),
        "target": {"mode": "all", "selector": pod("peer-3")},
    },
    ("NetworkChaos", "gf-bandwidth"): {
        "action": "bandwidth",
        "mode": "all",
        "direction": "to",
        "selector": pod("peer-0"),
        "target": {"mode": "all", "selector": pod("peer-1")},
        "bandwidth": {"rate": "10mbit", "limit": 20000, "buffer": 10000},
    },
    ("StressChaos", "gf-stress"): {
        "mode": "all",
        "selector": pod("peer-1"),
        "duration": "120s",
        "stressors": {"cpu": {"workers": 1, "load": 5}},
    },
    ("TimeChaos", "gf-time"): {"mode": "all", "selector": pod("peer-0"), "timeOffset": "-10m", "duration": "120s"},
}


def injected(system: System, kind: str, name: str) -> bool:
    done = system.cli("get", KINDS[kind], name, "-n", NS, "-o", "json", check=False)
    if done.returncode != 0:
        return False
    recs = ((yaml.safe_load(done.stdout).get("status") or {}).get("experiment") or {}).get("containerRecords") or []
    return bool(recs) and all(r["phase"] == "Injected" for r in recs)


def test_every_dashboard_expression_returns_series_during_live_experiments(
    system: System, prometheus: prom.Prometheus
) -> None:
    if not (timeskew.native_dir() / "timeskew").exists():
        pytest.skip(f"{timeskew.native_dir()}/timeskew is not built (make install builds native/)")
    exprs = {where: grafana.substitute(e, NS) for where, e in grafana.expressions(grafana.load()).items()}
    start = time.time()
    try:
        # One experiment applied and recovered first, so that recoveries have happened.
        first = doc("StressChaos", "gf-recovered", EXPERIMENTS[("StressChaos", "gf-stress")])
        system.cli("apply", "-f", "-", stdin=first)
        eventually(lambda: injected(system, "StressChaos", "gf-recovered"), timeout=30, interval=0.5)
        system.cli("delete", "stresschaos", "gf-recovered", "-n", NS)
        for (kind, name), spec in EXPERIMENTS.items():
            system.cli("apply", "-f", "-", stdin=doc(kind, name, spec))
        for kind, name in EXPERIMENTS:
            eventually(lambda k=kind, n=name: injected(system, k, n), timeout=30, interval=0.5)
        wait_blocked(system, {(2, 3)})  # and the partition drops packets

        def missing() -> list[str]:
            return [where for where, e in exprs.items() if not prometheus.query_range(e, start, time.time())]

        left: list[str] = []

        def none_missing() -> bool:
            left[:] = missing()
            return not left

        deadline = time.monotonic() + 45
        while not none_missing() and time.monotonic() < deadline:
            time.sleep(1)
        assert not left, f"no series for {left}"
    finally:
        for kind, name in [("StressChaos", "gf-recovered"), *EXPERIMENTS]:
            system.cli("delete", KINDS[kind], name, "-n", NS, check=False)
    wait_blocked(system, set())
