"""pod-failure in local mode, end to end on process pods: the pod's command is gone (and the pod
not ready) while the fault is in force, and runs again, started afresh with a new PID, after it:
through the CLI (status records, Events), through a Workflow step, and at a hold's deadline with
no injector involved (the supervisor knows the deadline itself).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from helpers.live import System, eventually

from chaosbus.common import cgroups, podhold, processid

# Each step runs several CLI processes; at load averages past 30 on two cores a test takes minutes.
pytestmark = [pytest.mark.privileged, pytest.mark.timeout(300)]
POD = "pf-0"
Made = list[tuple[str, str]]  # (kind, name) of what a test applied


def doc(kind: str, name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    )


@pytest.fixture
def pod(system: System) -> Iterator[Made]:
    """The pod; the test lists what it applies, deleted afterwards even when it fails."""
    system.cli("pod", "run", "--name", POD, "-l", "app=pf", "--", "sleep", "infinity")
    made: list[tuple[str, str]] = []
    yield made
    for kind, name in made:
        system.cli("delete", kind, name, check=False)
    system.cli("pod", "rm", POD, check=False)


def status(system: System) -> dict[str, Any]:
    cs: dict[str, Any] = system.pod(POD)["status"]["containerStatuses"][0]
    return cs


def running_pid(system: System) -> int | None:
    """The pod's command pid once its supervisor reports it running and ready (else None)."""
    cs = status(system)
    ident = processid.parse(cs.get("containerID", ""))
    return ident.pid if cs.get("ready") and ident is not None and processid.is_running(ident) else None


def stopped(system: System, old_pid: int) -> bool:
    """The old command is gone, nothing runs in the pod's cgroup, and the pod says why it is not ready."""
    if psutil.pid_exists(old_pid) and psutil.Process(old_pid).status() != psutil.STATUS_ZOMBIE:
        return False
    pod = system.pod(POD)
    cs = pod["status"]["containerStatuses"][0]
    cgroup = pod["metadata"]["annotations"]["chaosbus.io/cgroup"].split(",")[0]
    return (
        not cs["ready"]
        and not cs["containerID"]
        and not cgroups.procs(cgroup)
        and (cs.get("state") or {}).get("waiting", {}).get("reason") == "PodFailure"
    )


def stays_stopped(system: System, old_pid: int, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert stopped(system, old_pid), status(system)
        time.sleep(0.2)


def records(system: System, kind: str, name: str) -> list[dict[str, Any]]:
    obj = system.get(kind, name) or {}
    return ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []


def test_the_command_is_gone_during_the_fault_and_starts_afresh_after(system: System, pod: Made) -> None:
    first = eventually(lambda: running_pid(system), timeout=30)
    restarts = status(system)["restartCount"]
    pod.append(("podchaos", "pf"))
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "PodChaos",
            "pf",
            {"action": "pod-failure", "mode": "one", "selector": {"labelSelectors": {"app": "pf"}}, "duration": "60s"},
        ),
    )
    [rec] = eventually(lambda: [r for r in records(system, "podchaos", "pf") if r["phase"] == "Injected"], timeout=30)
    assert rec["id"] == f"default/{POD}"
    assert f"command stopped (pid {first})" in rec["events"][-1]["message"]
    eventually(lambda: stopped(system, first), timeout=30)
    stays_stopped(system, first, 1.5)  # not restarted while the fault is in force
    [row] = [ln.split() for ln in system.cli("pod", "list").stdout.splitlines() if ln.split()[1:2] == [POD]]
    assert row[2:4] == ["0/1", "PodFailure"]

    system.cli("delete", "podchaos", "pf")
    again = eventually(lambda: running_pid(system), timeout=40)
    assert again != first
    assert status(system)["restartCount"] == restarts + 1


def test_status_records_and_events_through_the_cli(system: System, pod: Made) -> None:
    first = eventually(lambda: running_pid(system), timeout=30)
    pod.append(("podchaos", "pf"))
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "PodChaos",
            "pf",
            {"action": "pod-failure", "mode": "all", "selector": {"labelSelectors": {"app": "pf"}}, "duration": "3s"},
        ),
    )
    eventually(lambda: any(int(r.get("recoveredCount", 0)) >= 1 for r in records(system, "podchaos", "pf")), timeout=40)
    assert eventually(lambda: running_pid(system), timeout=40) != first
    described = eventually(
        lambda: (
            (d := system.cli("describe", "podchaos", "pf").stdout) and "Recovered" in d.split("Events:", 1)[1] and d
        ),
        timeout=30,
    )
    events = described.split("Events:", 1)[1]
    assert f"Successfully apply chaos for default/{POD}" in events
    assert f"Successfully recover chaos for default/{POD}" in events


def test_a_workflow_step_fails_the_pod_for_its_deadline(system: System, pod: Made) -> None:
    first = eventually(lambda: running_pid(system), timeout=30)
    pod.append(("workflow", "pf-wf"))
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "Workflow",
            "pf-wf",
            {
                "entry": "entry",
                "templates": [
                    {"name": "entry", "templateType": "Serial", "deadline": "60s", "children": ["fail"]},
                    {
                        "name": "fail",
                        "templateType": "PodChaos",
                        "deadline": "15s",
                        "podChaos": {
                            "action": "pod-failure",
                            "mode": "one",
                            "selector": {"labelSelectors": {"app": "pf"}},
                        },
                    },
                ],
            },
        ),
    )
    eventually(lambda: stopped(system, first), timeout=30)
    assert eventually(lambda: running_pid(system), timeout=30) != first  # the step's deadline ended it


def test_a_hold_ends_at_its_deadline_with_no_injector_involved(system: System, pod: Made) -> None:
    first = eventually(lambda: running_pid(system), timeout=30)
    netns = system.pod(POD)["metadata"]["annotations"]["chaosbus.io/netns"]
    holds = podhold.pod_dir(netns, Path(system.env["CHAOSBUS_STATE_DIR"]) / "pods" / "holds")
    assert oct(os.stat(holds).st_mode & 0o777) == "0o700"
    name = podhold.put(
        holds, podhold.Hold(key="by-hand", node="nobody", experiment="default/by-hand", deadline=time.time() + 30)
    )
    eventually(lambda: stopped(system, first), timeout=30)
    assert eventually(lambda: running_pid(system), timeout=40) != first
    assert (holds / name).exists()  # nobody removed it: the supervisor read its deadline


def _injector_pids(system: System) -> list[int]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "chaosbus.injector" in cmd and system.url in cmd:
            found.append(p.info["pid"])
    return found


def test_injector_kill9_mid_fault_the_command_returns_at_the_deadline(system: System, pod: Made) -> None:
    first = eventually(lambda: running_pid(system), timeout=30)
    pod.append(("podchaos", "pf-k9"))
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "PodChaos",
            "pf-k9",
            {"action": "pod-failure", "mode": "one", "selector": {"labelSelectors": {"app": "pf"}}, "duration": "20s"},
        ),
    )
    eventually(lambda: [r for r in records(system, "podchaos", "pf-k9") if r["phase"] == "Injected"], timeout=30)
    killed = _injector_pids(system)
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    eventually(lambda: stopped(system, first), timeout=15)  # held while the injector is dead
    assert eventually(lambda: running_pid(system), timeout=40) != first
    eventually(lambda: [p for p in _injector_pids(system) if p not in killed], timeout=30)
    eventually(
        lambda: any(int(r.get("recoveredCount", 0)) >= 1 for r in records(system, "podchaos", "pf-k9")), timeout=30
    )
    netns = system.pod(POD)["metadata"]["annotations"]["chaosbus.io/netns"]
    holds = Path(system.env["CHAOSBUS_STATE_DIR"]) / "pods" / "holds" / netns
    eventually(lambda: not podhold.names(holds), timeout=30)  # the restarted injector took its hold away
