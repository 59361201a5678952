"""TimeChaos end to end on process pods: through the CLI (status records), through a Workflow
step, and across a kill -9 of the injector. The targets print their clocks; a skew is the change
of (CLOCK_REALTIME - CLOCK_BOOTTIME), exact however loaded the machine is."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from helpers.clocktargets import ClockLog, c_argv, monotonic_skew, python_argv, realtime_skew
from helpers.live import System, eventually

from chaosbus.common import processid
from chaosbus.injector.backends import timeskew

# Its first and last tests carry the live system's start and stop, slow on two loaded cores.
pytestmark = [pytest.mark.privileged, pytest.mark.timeout(300)]

HOUR_NS = 3600 * 10**9
TOLERANCE_NS = 10 * 10**6


def doc(kind: str, name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    )


class ClockPod:
    def __init__(self, system: System, name: str, argv: list[str], threads: int, label: str) -> None:
        self.name, self.threads = name, threads
        log = Path(system.env["CHAOSBUS_STATE_DIR"]) / "pods" / f"default_{name}.log"
        self.log = ClockLog(log)
        system.cli("pod", "run", "--name", name, "-l", f"app={label}", "--", *argv)
        ident = processid.parse(system.pod(name)["status"]["containerStatuses"][0]["containerID"])
        assert ident is not None
        self.pid = ident.pid

    def skews(self, of: Any = realtime_skew) -> dict[int, int]:
        return {tid: of(row) for tid, row in self.log.fresh(self.threads).items()}


def shifted(before: dict[int, int], after: dict[int, int], offset: int) -> bool:
    return before.keys() == after.keys() and all(abs(after[t] - before[t] - offset) < TOLERANCE_NS for t in before)


@pytest.fixture
def clock_pods(system: System) -> Iterator[tuple[ClockPod, ClockPod, ClockPod]]:
    if not (timeskew.native_dir() / "timeskew").exists():
        pytest.skip(f"{timeskew.native_dir()}/timeskew is not built (make install builds native/)")
    pods = (
        ClockPod(system, "clock-c", c_argv(2), 2, "clock"),
        ClockPod(system, "clock-py", python_argv(2), 2, "clock"),
        ClockPod(system, "clock-other", c_argv(1), 1, "other-clock"),
    )
    yield pods
    for p in pods:
        p.log.stop()
        system.cli("pod", "rm", p.name, check=False)


def records(system: System, kind: str, name: str) -> list[dict[str, Any]]:
    obj = system.get(kind, name) or {}
    return ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []


def injected(system: System, name: str, n: int) -> list[dict[str, Any]]:
    recs = records(system, "timechaos", name)
    return recs if len(recs) == n and all(r["phase"] == "Injected" for r in recs) else []


def vdso_is(pid: int, patches: tuple[timeskew.Patch, ...]) -> bool:
    return all(timeskew.read_bytes(pid, p.address, len(p.original)) == p.original for p in patches)


def skewed_gauge(system: System, name: str) -> float | None:
    """The injector's read-back of the experiment's patched processes; None: no series."""
    found = system.samples("injector", "chaosbus_injector_skewed_processes", namespace="default", name=name)
    return sum(found) if found else None


def test_timechaos_minus_one_hour_through_the_cli(system: System, clock_pods: tuple[ClockPod, ...]) -> None:
    c, py, other = clock_pods
    base = {p.name: p.skews() for p in clock_pods}
    mono = c.skews(monotonic_skew)
    originals = {p.name: timeskew.plan(p.pid) for p in (c, py)}
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "TimeChaos",
            "skew",
            {"mode": "all", "selector": {"labelSelectors": {"app": "clock"}}, "timeOffset": "-1h", "duration": "60s"},
        ),
    )
    recs = eventually(lambda: injected(system, "skew", 2), timeout=15)
    assert "CLOCK_REALTIME -3600s in 1 processes" in recs[0]["events"][-1]["message"]
    assert shifted(base["clock-c"], c.skews(), -HOUR_NS)
    assert shifted(base["clock-py"], py.skews(), -HOUR_NS)
    assert shifted(base["clock-other"], other.skews(), 0)
    assert shifted(mono, c.skews(monotonic_skew), 0)
    # Read back from /proc/<pid>/mem: both targets' processes are patched now.
    eventually(lambda: skewed_gauge(system, "skew") == 2, timeout=10)
    # Local mode keeps one Event per reason, counting repeats (the newest message shown), as kubectl aggregates.
    applied = eventually(
        lambda: [
            ln
            for ln in system.cli("describe", "timechaos", "skew").stdout.split("Events:", 1)[1].splitlines()
            if ln.split()[:2] == ["Normal", "Applied"] and "(x2 since" in ln
        ],
        timeout=10,
    )
    assert re.search(r"Successfully apply chaos for default/clock-(c|py)/clock-(c|py)$", applied[0])

    system.cli("delete", "timechaos", "skew")
    for p in (c, py):
        eventually(lambda p=p: vdso_is(p.pid, originals[p.name]), timeout=10)
        assert shifted(base[p.name], p.skews(), 0)
    eventually(lambda: skewed_gauge(system, "skew") is None, timeout=10)


def test_timechaos_with_monotonic_as_a_workflow_step(system: System, clock_pods: tuple[ClockPod, ...]) -> None:
    c = clock_pods[0]
    base, mono = c.skews(), c.skews(monotonic_skew)
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "Workflow",
            "wf-skew",
            {
                "entry": "entry",
                "templates": [
                    {"name": "entry", "templateType": "Serial", "deadline": "60s", "children": ["skew"]},
                    {
                        "name": "skew",
                        "templateType": "TimeChaos",
                        "deadline": "12s",  # the skew is seen on both clocks before it ends
                        "timeChaos": {
                            "mode": "all",
                            "selector": {"labelSelectors": {"app": "clock"}},
                            "containerNames": [],
                            "timeOffset": "1m30.5s",
                            "clockIds": ["CLOCK_REALTIME", "CLOCK_MONOTONIC"],
                        },
                    },
                ],
            },
        ),
    )
    offset = 90_500_000_000
    eventually(lambda: shifted(base, c.skews(), offset), timeout=12)
    assert shifted(mono, c.skews(monotonic_skew), offset)
    eventually(lambda: shifted(base, c.skews(), 0), timeout=30)  # the step's deadline recovers it
    system.cli("delete", "workflow", "wf-skew")


def _injector_pids(system: System) -> list[int]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "chaosbus.injector" in cmd and system.url in cmd:
            found.append(p.info["pid"])
    return found


def test_injector_kill9_mid_fault_then_restart_restores(system: System, clock_pods: tuple[ClockPod, ...]) -> None:
    c = clock_pods[0]
    base = c.skews()
    originals = timeskew.plan(c.pid)
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "TimeChaos",
            "skew-k9",
            {"mode": "all", "selector": {"labelSelectors": {"app": "clock"}}, "timeOffset": "-1h", "duration": "120s"},
        ),
    )
    eventually(lambda: injected(system, "skew-k9", 2), timeout=15)
    killed = _injector_pids(system)
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    assert shifted(base, c.skews(), -HOUR_NS)  # the patch outlives the injector
    eventually(lambda: [p for p in _injector_pids(system) if p not in killed], timeout=30)
    system.cli("delete", "timechaos", "skew-k9")
    eventually(lambda: vdso_is(c.pid, originals), timeout=30)
    assert shifted(base, c.skews(), 0)
