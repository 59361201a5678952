"""docs/observability.md lists exactly the metrics the services register, and
deploy/prometheus/local.yml is what `chaosbus prometheus-config` prints for the default ports.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import metricnames

from chaosbus.cli import promconfig
from chaosbus.cli.up import METRICS_PORTS, SERVICES

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED = re.compile(r"^\| `([a-z_:][a-z0-9_:]*)[{`]", re.M)


def test_every_registered_metric_is_documented_and_nothing_else() -> None:
    code = metricnames.registered()
    doc = set(DOCUMENTED.findall((ROOT / "docs" / "observability.md").read_text()))
    assert len(code) > 20, code  # the scan found the services' metrics at all
    assert code - doc == set(), "add these to docs/observability.md's table"
    assert doc - code == set(), "docs/observability.md lists metrics the code no longer registers"


def test_deploy_local_config_is_what_the_cli_prints_for_the_default_ports() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "chaosbus.cli", "prometheus-config"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert (ROOT / "deploy" / "prometheus" / "local.yml").read_text() == printed
    conf = yaml.safe_load(printed)
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in conf["scrape_configs"]}
    assert targets == {f"chaosbus-{s}": [f"127.0.0.1:{METRICS_PORTS[s]}"] for s in SERVICES}


def test_base_port_places_services_as_up_does() -> None:
    conf = promconfig.scrape_config(promconfig.ports_from_base(19100), interval="1s")
    targets = {j["job_name"]: j["static_configs"][0]["targets"][0] for j in conf["scrape_configs"]}
    assert targets == {
        "chaosbus-watcher": "127.0.0.1:19100",
        "chaosbus-scheduler": "127.0.0.1:19101",
        "chaosbus-recorder": "127.0.0.1:19102",
        "chaosbus-injector": "127.0.0.1:19103",
    }
    assert conf["global"]["scrape_interval"] == "1s"


def test_the_guard_and_a_dashboard_get_jobs_when_asked_for() -> None:
    conf = promconfig.scrape_config(promconfig.ports_from_base(19100, guard=True, dashboard=2400))
    targets = {j["job_name"]: j["static_configs"][0]["targets"][0] for j in conf["scrape_configs"]}
    assert targets["chaosbus-guard"] == "127.0.0.1:19104"  # after the four services, as `up` starts it
    assert targets["chaosbus-dashboard"] == "127.0.0.1:2400"
    default = promconfig.scrape_config(promconfig.ports_from_base(None, guard=True))
    assert {j["job_name"]: j["static_configs"][0]["targets"][0] for j in default["scrape_configs"]}[
        "chaosbus-guard"
    ] == "127.0.0.1:9106"
