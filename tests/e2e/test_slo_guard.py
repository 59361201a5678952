"""SLO guards against a real Prometheus scraping a process pod whose error rate the test sets
(helpers/errorapp.py): a `type: Prometheus` StatusCheck follows the rate, and in a Workflow with
`abortWithStatusCheck` it aborts the workflow and recovers its faults when the objective breaks;
the global guard (`chaosbus guard`) engages the kill switch by itself and says why.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import prom
from helpers.live import BRIDGE, SUBNET, System, eventually, wait_blocked

# Beyond the default 120 s: the first test of a worker also pays for the live system's start (a
# nats-server, four services, four pods) and its Prometheus, which take a minute or more on a
# loaded 2-core machine; on an idle one each test takes 20-60 s.
pytestmark = [pytest.mark.privileged, pytest.mark.timeout(300)]

APP = Path(__file__).resolve().parents[1] / "helpers" / "errorapp.py"
PORT = 9100
ERROR_RATIO = "sum(rate(app_errors_total[5s])) / sum(rate(app_requests_total[5s]))"


@dataclass
class Slo:
    prometheus: prom.Prometheus
    flag: Path

    def fail(self) -> None:
        self.flag.touch()

    def heal(self) -> None:
        self.flag.unlink(missing_ok=True)

    def ratio(self) -> float | None:
        found = self.prometheus.query(ERROR_RATIO)
        return float(found[0]["value"][1]) if found else None


@pytest.fixture(scope="module")
def slo(system: System, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slo]:
    if prom.unavailable():
        pytest.skip(prom.unavailable() or "")
    work = tmp_path_factory.mktemp("slo")
    flag = work / "failing"
    system.cli(
        "pod",
        "run",
        "--name",
        "errorapp",
        "-l",
        "app=errorapp",
        "--bridge",
        BRIDGE,
        "--subnet",
        SUBNET,
        "--",
        sys.executable,
        str(APP),
        str(PORT),
        str(flag),
    )
    try:
        ip = system.pod("errorapp")["status"]["podIP"]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "errorapp", "static_configs": [{"targets": [f"{ip}:{PORT}"]}]}],
        }
        with prom.running(config, work / "prometheus") as p:
            s = Slo(p, flag)
            eventually(lambda: s.ratio() == 0.0, timeout=30, interval=0.5)
            yield s
    finally:
        system.cli("pod", "rm", "errorapp", check=False)


def doc(kind: str, name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    )


def check(slo: Slo) -> dict[str, Any]:
    return {
        "mode": "Continuous",
        "type": "Prometheus",
        "intervalSeconds": 1,
        "timeoutSeconds": 2,
        "failureThreshold": 2,
        "successThreshold": 1,
        "prometheus": {
            "endpoint": slo.prometheus.url,
            "query": ERROR_RATIO,
            "comparator": {"criteria": "<", "value": 0.1},
        },
    }


def conditions(obj: dict[str, Any] | None) -> dict[str, str]:
    return {c["type"]: c["status"] for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def test_prometheus_status_check_follows_the_error_rate(system: System, slo: Slo) -> None:
    slo.heal()
    system.cli("apply", "-f", "-", stdin=doc("StatusCheck", "slo-check", check(slo)))
    try:

        def records() -> list[str]:
            status = (system.get("statuscheck", "slo-check") or {}).get("status") or {}
            return [r["outcome"] for r in status.get("records") or []]

        eventually(lambda: records().count("Success") >= 2, timeout=20, interval=0.5)
        assert conditions(system.get("statuscheck", "slo-check"))["Completed"] == "False"
        slo.fail()
        eventually(lambda: (slo.ratio() or 0) > 0.5, timeout=20, interval=0.5)
        eventually(
            lambda: conditions(system.get("statuscheck", "slo-check")).get("FailureThresholdExceed") == "True",
            timeout=20,
            interval=0.5,
        )
        assert records()[-2:] == ["Failure", "Failure"] and "Success" in records()
    finally:
        slo.heal()
        system.cli("delete", "statuscheck", "slo-check", check=False)


def test_breached_objective_aborts_the_workflow_and_recovers_its_fault(system: System, slo: Slo) -> None:
    slo.heal()
    eventually(lambda: slo.ratio() == 0.0, timeout=20, interval=0.5)
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "Workflow",
            "slo-guarded",
            {
                "entry": "entry",
                "templates": [
                    {"name": "entry", "templateType": "Parallel", "children": ["slo", "cut"]},
                    {
                        "name": "slo",
                        "templateType": "StatusCheck",
                        "deadline": "120s",
                        "abortWithStatusCheck": True,
                        "statusCheck": check(slo),
                    },
                    {
                        "name": "cut",
                        "templateType": "NetworkChaos",
                        "deadline": "120s",
                        "networkChaos": {
                            "action": "partition",
                            "mode": "all",
                            "direction": "to",
                            "selector": {"namespaces": ["default"], "fieldSelectors": {"metadata.name": "peer-0"}},
                            "target": {
                                "mode": "all",
                                "selector": {"namespaces": ["default"], "fieldSelectors": {"metadata.name": "peer-1"}},
                            },
                        },
                    },
                ],
            },
        ),
    )
    try:
        wait_blocked(system, {(0, 1)}, timeout=20)
        slo.fail()
        eventually(
            lambda: conditions(system.get("workflow", "slo-guarded")).get("Aborted") == "True", timeout=30, interval=0.5
        )
        wait_blocked(system, set(), timeout=15)
    finally:
        slo.heal()
        system.cli("delete", "workflow", "slo-guarded", check=False)


def guard_halts(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            body = r.read().decode()
    except OSError:
        return None
    found = re.search(r'chaosbus_guard_halts_total\{guard="checkout"\} (\S+)', body)
    return float(found.group(1)) if found else None


def test_global_guard_engages_the_kill_switch_and_says_why(system: System, slo: Slo) -> None:
    slo.heal()
    eventually(lambda: slo.ratio() == 0.0, timeout=20, interval=0.5)
    port = prom.free_port()
    guard = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaosbus.cli",
            "guard",
            "--name",
            "checkout",
            "--prometheus",
            slo.prometheus.url,
            "--query",
            ERROR_RATIO,
            "--criteria",
            "<",
            "--value",
            "0.1",
            "--interval",
            "1",
            "--failures",
            "2",
            "--metrics-port",
            str(port),
        ],
        env=system.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    cut = {
        "action": "partition",
        "mode": "all",
        "direction": "to",
        "selector": {"namespaces": ["default"], "fieldSelectors": {"metadata.name": "peer-0"}},
        "target": {
            "mode": "all",
            "selector": {"namespaces": ["default"], "fieldSelectors": {"metadata.name": "peer-1"}},
        },
    }
    try:
        eventually(lambda: guard_halts(port) == 0.0, timeout=20, interval=0.5)  # running, objective met
        system.cli("apply", "-f", "-", stdin=doc("NetworkChaos", "guarded-cut", cut))
        wait_blocked(system, {(0, 1)}, timeout=20)
        slo.fail()
        wait_blocked(system, set(), timeout=30)  # every fault recovered by the kill switch
        assert guard_halts(port) == 1.0
        # Why, where an operator looks: the refused apply, the recovered record, the guard's log.
        refused = system.cli("apply", "-f", "-", stdin=doc("NetworkChaos", "after-halt", cut), check=False)
        assert refused.returncode != 0 and "SLO guard checkout" in refused.stderr, refused.stderr
        assert "not met" in refused.stderr and "app_errors_total" in refused.stderr
        status = system.cli("status").stdout
        assert "ENGAGED" in status and "SLO guard checkout" in status and "guard checkout@" in status, status
        described = system.cli("describe", "networkchaos", "guarded-cut").stdout
        assert "SLO guard checkout" in described, described
    finally:
        guard.terminate()
        _, err = guard.communicate(timeout=20)
        slo.heal()
        system.cli("resume")
        system.cli("delete", "networkchaos", "guarded-cut", check=False)
    assert "SLO guard engaged the kill switch" in err
    assert system.cli("status").stdout.strip() == "kill switch: not engaged"
