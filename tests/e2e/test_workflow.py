"""Workflow and StatusCheck end to end on the live local system: a standalone StatusCheck against a
real HTTP server the test flips between 200 and 500; a Serial workflow partition -> suspend ->
pod-kill -> partition whose steps the connectivity matrix sees in order; a Parallel workflow whose
branches run together; and a failing StatusCheck that aborts a workflow and recovers its faults.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import yaml
from helpers.live import System, eventually, wait_blocked

from chaosbus.common import processid

pytestmark = pytest.mark.privileged


class Flippable(http.server.ThreadingHTTPServer):
    code = 200


class Handler(http.server.BaseHTTPRequestHandler):
    server: Flippable

    def do_GET(self) -> None:
        self.send_response(self.server.code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health() -> Iterator[Flippable]:
    srv = Flippable(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def url(srv: Flippable) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/health"


def doc(kind: str, name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    )


def cut(name: str, src: int, dst: int, deadline: str) -> dict[str, Any]:
    return {
        "name": name,
        "templateType": "NetworkChaos",
        "deadline": deadline,
        "networkChaos": {
            "action": "partition",
            "mode": "all",
            "direction": "to",
            "selector": {"labelSelectors": {"index": str(src)}},
            "target": {"mode": "all", "selector": {"labelSelectors": {"index": str(dst)}}},
        },
    }


def check(srv: Flippable, mode: str, **kw: Any) -> dict[str, Any]:
    return {
        "mode": mode,
        "type": "HTTP",
        "intervalSeconds": 1,
        "timeoutSeconds": 1,
        "failureThreshold": 2,
        "successThreshold": 2,
        "http": {"url": url(srv), "method": "GET", "criteria": {"statusCode": "200-299"}},
        **kw,
    }


def conditions(obj: dict[str, Any] | None) -> dict[str, str]:
    return {c["type"]: c["status"] for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def wf_done(system: System, name: str, ctype: str = "Accomplished") -> bool:
    return conditions(system.get("workflow", name)).get(ctype) == "True"


def test_standalone_status_check_follows_a_flipping_server(system: System, health: Flippable) -> None:
    system.cli("apply", "-f", "-", stdin=doc("StatusCheck", "sc-sync", check(health, "Synchronous")))
    ok = eventually(
        lambda: conditions(system.get("statuscheck", "sc-sync")).get("SuccessThresholdExceed") == "True", timeout=15
    )
    assert ok
    status = system.get("statuscheck", "sc-sync")["status"]  # type: ignore[index]
    assert conditions(system.get("statuscheck", "sc-sync"))["Completed"] == "True"
    assert [r["outcome"] for r in status["records"]] == ["Success", "Success"] and status["count"] == 2

    system.cli("apply", "-f", "-", stdin=doc("StatusCheck", "sc-cont", check(health, "Continuous")))
    eventually(
        lambda: len((system.get("statuscheck", "sc-cont") or {}).get("status", {}).get("records", [])) >= 3, timeout=15
    )
    assert conditions(system.get("statuscheck", "sc-cont"))["Completed"] == "False"
    health.code = 500
    eventually(
        lambda: conditions(system.get("statuscheck", "sc-cont")).get("FailureThresholdExceed") == "True", timeout=15
    )
    outcomes = [r["outcome"] for r in system.get("statuscheck", "sc-cont")["status"]["records"]]  # type: ignore[index]
    assert outcomes[-2:] == ["Failure", "Failure"] and "Success" in outcomes
    port = re.findall(r'"metrics_port": (\d+)', system.service_log("scheduler"))[-1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read().decode()
    failures = re.search(r'chaosbus_scheduler_status_check_probes_total\{outcome="failure"\} (\S+)', body)
    assert failures and float(failures.group(1)) >= 2
    for name in ("sc-sync", "sc-cont"):
        system.cli("delete", "statuscheck", name)


def test_serial_workflow_runs_partition_suspend_pod_kill_partition_in_order(system: System) -> None:
    pid3 = system.pods[3].pid
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "Workflow",
            "serial",
            {
                "entry": "entry",
                "templates": [
                    {
                        "name": "entry",
                        "templateType": "Serial",
                        "deadline": "90s",
                        "children": ["cut-01", "pause", "kill-3", "cut-23"],
                    },
                    # Each partition is seen while it lasts: from its step's start, with every
                    # pair probed (and, for cut-23, pod 3 restarted and serving) inside it.
                    cut("cut-01", 0, 1, "8s"),
                    {"name": "pause", "templateType": "Suspend", "deadline": "3s"},
                    {
                        "name": "kill-3",
                        "templateType": "PodChaos",
                        "deadline": "30s",
                        "podChaos": {
                            "action": "pod-kill",
                            "mode": "all",
                            "selector": {"labelSelectors": {"index": "3"}},
                        },
                    },
                    cut("cut-23", 2, 3, "10s"),
                ],
            },
        ),
    )
    wait_blocked(system, {(0, 1)}, timeout=10)
    assert psutil.pid_exists(pid3), "the pod-kill ran before the first partition ended"
    wait_blocked(system, set(), timeout=15)  # the partition ended; the suspend runs
    eventually(lambda: not psutil.pid_exists(pid3) or psutil.Process(pid3).status() == psutil.STATUS_ZOMBIE, timeout=15)
    system.pods[3].pid = eventually(lambda: _restarted_pid(system, pid3), timeout=15)
    wait_blocked(system, {(2, 3)}, timeout=15)
    eventually(lambda: wf_done(system, "serial"), timeout=20)
    wait_blocked(system, set(), timeout=10)
    nodes = [
        n
        for n in _objects(system, "workflownode")
        if n["metadata"]["labels"].get("chaos-mesh.org/workflow") == "serial"
    ]
    assert sorted(n["spec"]["templateName"] for n in nodes) == ["cut-01", "cut-23", "entry", "kill-3", "pause"]
    by_template = {n["spec"]["templateName"]: conditions(n) for n in nodes}
    assert by_template["kill-3"]["Accomplished"] == "True"  # done when injected, not at its 30s deadline
    assert by_template["cut-01"]["DeadlineExceed"] == "True" and by_template["entry"]["Accomplished"] == "True"
    assert not _objects(system, "networkchaos", label="serial") and not _objects(system, "podchaos", label="serial")
    system.cli("delete", "workflow", "serial")


def test_parallel_workflow_runs_its_branches_together(system: System) -> None:
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "Workflow",
            "parallel",
            {
                "entry": "entry",
                "templates": [
                    {"name": "entry", "templateType": "Parallel", "children": ["cut-01", "cut-23"]},
                    cut("cut-01", 0, 1, "8s"),  # both seen at once, with every pair probed, while they last
                    cut("cut-23", 2, 3, "8s"),
                ],
            },
        ),
    )
    wait_blocked(system, {(0, 1), (2, 3)}, timeout=10)
    eventually(lambda: wf_done(system, "parallel"), timeout=20)
    wait_blocked(system, set(), timeout=10)
    system.cli("delete", "workflow", "parallel")


def test_failing_status_check_aborts_the_workflow_and_recovers_every_fault(system: System, health: Flippable) -> None:
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "Workflow",
            "guarded",
            {
                "entry": "entry",
                "templates": [
                    {"name": "entry", "templateType": "Parallel", "children": ["probe", "cut-01", "cut-23"]},
                    {
                        "name": "probe",
                        "templateType": "StatusCheck",
                        "deadline": "120s",
                        "abortWithStatusCheck": True,
                        "statusCheck": check(health, "Continuous"),
                    },
                    cut("cut-01", 0, 1, "120s"),
                    cut("cut-23", 2, 3, "120s"),
                ],
            },
        ),
    )
    wait_blocked(system, {(0, 1), (2, 3)}, timeout=10)
    health.code = 500
    eventually(lambda: wf_done(system, "guarded", "Aborted"), timeout=15)
    wait_blocked(system, set(), timeout=10)
    wf = system.get("workflow", "guarded") or {}
    assert wf["metadata"]["annotations"]["workflow.chaos-mesh.org/abort"] == "true"
    assert conditions(wf)["Accomplished"] == "True"
    eventually(lambda: not _objects(system, "networkchaos", label="guarded"), timeout=10)
    system.cli("delete", "workflow", "guarded")


def _restarted_pid(system: System, old: int) -> int | None:
    ident = processid.parse(system.pod("peer-3")["status"]["containerStatuses"][0]["containerID"])
    return ident.pid if ident is not None and ident.pid != old else None


def _objects(system: System, kind: str, label: str | None = None) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = yaml.safe_load(system.cli("get", kind, "-o", "yaml").stdout) or []
    if isinstance(objs, dict):
        objs = objs.get("items") or [] if objs.get("kind") == "List" else [objs]
    if label is not None:
        objs = [o for o in objs if (o["metadata"].get("labels") or {}).get("chaos-mesh.org/workflow") == label]
    return objs


def test_task_output_chooses_the_branch_that_runs(system: System) -> None:
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "Workflow",
            "task",
            {
                "entry": "entry",
                "templates": [
                    {
                        "name": "entry",
                        "templateType": "Task",
                        "deadline": "60s",
                        "task": {
                            "container": {"name": "probe", "image": "busybox", "command": ["echo"], "args": ["yes"]}
                        },
                        "conditionalBranches": [
                            {"target": "cut-01", "expression": 'stdout == "yes" && exitCode == 0'},
                            {"target": "cut-23", "expression": "exitCode != 0"},
                        ],
                    },
                    cut("cut-01", 0, 1, "4s"),
                    cut("cut-23", 2, 3, "4s"),
                ],
            },
        ),
    )
    wait_blocked(system, {(0, 1)}, timeout=15)
    eventually(lambda: wf_done(system, "task"), timeout=15)
    wait_blocked(system, set(), timeout=10)
    (entry,) = [n for n in _objects(system, "workflownode", label="task") if n["spec"]["templateName"] == "entry"]
    cbs = entry["status"]["conditionalBranchesStatus"]
    assert [b["evaluationResult"] for b in cbs["branches"]] == ["True", "False"]
    assert '"stdout":"yes\\n"' in cbs["context"][0]
    system.cli("delete", "workflow", "task")


def _cmdline(p: psutil.Process) -> str:
    """A child's command line; "" for one that has exited meanwhile (a zombie has none)."""
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def test_scheduler_kill9_mid_workflow_resumes_and_creates_nothing_twice(system: System) -> None:
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "Workflow",
            "survivor",
            {
                "entry": "entry",
                "templates": [
                    {
                        "name": "entry",
                        "templateType": "Serial",
                        "deadline": "120s",
                        "children": ["cut-01", "pause", "cut-23"],
                    },
                    cut("cut-01", 0, 1, "8s"),  # each seen while it lasts, the second by a restarted scheduler
                    {"name": "pause", "templateType": "Suspend", "deadline": "2s"},
                    cut("cut-23", 2, 3, "8s"),
                ],
            },
        ),
    )
    wait_blocked(system, {(0, 1)}, timeout=10)
    (scheduler,) = [p for p in psutil.Process().children(recursive=True) if "chaosbus.scheduler" in _cmdline(p)]
    scheduler.kill()  # SIGKILL: no clean shutdown, whatever was in flight is lost
    scheduler.wait(10)
    wait_blocked(system, set(), timeout=30)  # the restarted scheduler ends cut-01 at (or after) its deadline
    wait_blocked(system, {(2, 3)}, timeout=20)
    eventually(lambda: wf_done(system, "survivor"), timeout=30)
    wait_blocked(system, set(), timeout=10)
    assert not [p for p in psutil.Process().children(recursive=True) if p.pid == scheduler.pid]
    creates: dict[str, int] = {}
    for line in system.service_log("scheduler").splitlines():
        if '"object write sent"' in line and '"op": "create"' in line:
            name = json.loads(line)["name"]
            creates[name] = creates.get(name, 0) + 1
    nodes = _objects(system, "workflownode", label="survivor")
    wanted = [n["metadata"]["name"] for n in nodes] + [
        n["status"]["chaosResource"]["name"] for n in nodes if n["spec"]["templateName"].startswith("cut")
    ]
    assert len(wanted) == 6 and all(creates.get(name) == 1 for name in wanted), (wanted, creates)
    assert not _objects(system, "networkchaos", label="survivor")
    system.cli("delete", "workflow", "survivor")


def test_schedule_step_fires_until_its_deadline_then_leaves_nothing(system: System) -> None:
    spawn = {
        "schedule": "@every 2s",
        "type": "NetworkChaos",
        "concurrencyPolicy": "Forbid",
        "historyLimit": 2,
        "networkChaos": cut("x", 0, 1, "1s")["networkChaos"] | {"duration": "1s"},
    }
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "Workflow",
            "periodic",
            {
                "entry": "entry",
                "templates": [
                    {"name": "entry", "templateType": "Serial", "children": ["every"]},
                    # Long enough for several 1 s children, one of which a probe of every pair sees.
                    {"name": "every", "templateType": "Schedule", "deadline": "12s", "schedule": spawn},
                ],
            },
        ),
    )
    # Read while the step runs: at its deadline the Schedule is deleted.
    (schedule,) = eventually(lambda: _objects(system, "schedule", label="periodic"), timeout=10)
    assert schedule["spec"]["schedule"] == "@every 2s"
    wait_blocked(system, {(0, 1)}, timeout=12)  # a child of the Schedule the step created
    eventually(lambda: wf_done(system, "periodic"), timeout=25)
    eventually(lambda: not _objects(system, "schedule", label="periodic"), timeout=10)
    eventually(
        lambda: (
            not [
                c
                for c in _objects(system, "networkchaos")
                if (c["metadata"].get("labels") or {}).get("managed-by") == schedule["metadata"]["name"]
            ]
        ),
        timeout=15,
    )
    wait_blocked(system, set(), timeout=10)
    system.cli("delete", "workflow", "periodic")


def test_a_status_check_template_lists_shows_and_runs_as_a_status_check(
    system: System, health: Flippable, tmp_path: Any
) -> None:
    spec = tmp_path / "check.yaml"
    spec.write_text(yaml.safe_dump(check(health, "Synchronous")))
    created = system.cli(
        "template", "statuscheck", "create", "web-ok", "-f", str(spec), "--description", "web answers 2xx"
    ).stdout
    assert "statuscheck template/web-ok created" in created
    # A ConfigMap applied as Chaos Mesh's dashboard writes it is a template too; any other is refused.
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "template-status-check-web-down",
                    "labels": {
                        "template.chaos-mesh.org/type": "StatusCheck",
                        "app.kubernetes.io/managed-by": "chaos-mesh",
                    },
                    "annotations": {
                        "template.chaos-mesh.org/name": "web-down",
                        "template.chaos-mesh.org/description": "",
                    },
                },
                "data": {"spec": yaml.safe_dump(check(health, "Synchronous"))},
            }
        ),
    )
    plain = system.cli(
        "apply",
        "-f",
        "-",
        check=False,
        stdin=yaml.safe_dump(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "b"}}
        ),
    )
    assert plain.returncode == 1 and "only StatusCheck templates" in plain.stderr
    listed = system.cli("template", "statuscheck", "list").stdout
    assert re.search(r"default\s+web-down", listed) and re.search(r"default\s+web-ok\s+web answers 2xx", listed)
    shown = yaml.safe_load(system.cli("template", "statuscheck", "get", "web-ok").stdout)
    assert shown["spec"]["http"]["url"] == url(health) and shown["description"] == "web answers 2xx"

    system.cli("template", "statuscheck", "run", "web-ok", "--check-name", "from-template")
    eventually(
        lambda: conditions(system.get("statuscheck", "from-template")).get("SuccessThresholdExceed") == "True",
        timeout=15,
    )
    system.cli("delete", "statuscheck", "from-template")
    for name in ("web-ok", "web-down"):
        system.cli("template", "statuscheck", "delete", name)
    assert "No resources found." in system.cli("template", "statuscheck", "list").stdout
