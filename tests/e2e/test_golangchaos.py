"""GolangChaos end to end on process pods running a Go program (native/tests/sqlloop.go, built
here) that queries a database/sql driver of its own in a loop: through the CLI (status records,
an unselected Go pod untouched), as a Workflow step, across a kill -9 of the injector, and bad
input refused by name."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from helpers.gotargets import QueryLog, failing, sqlloop_argv, succeeding, why_no_go
from helpers.live import System, eventually

from chaosbus.common import processid
from chaosbus.injector.backends import gosql

pytestmark = pytest.mark.privileged


def doc(kind: str, name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    )


class GoPod(QueryLog):
    def __init__(self, system: System, name: str, label: str) -> None:
        super().__init__()
        self.name = name
        self.follow_file(Path(system.env["CHAOSBUS_STATE_DIR"]) / "pods" / f"default_{name}.log")
        system.cli("pod", "run", "--name", name, "-l", f"app={label}", "--", *sqlloop_argv(2, 10))
        ident = processid.parse(system.pod(name)["status"]["containerStatuses"][0]["containerID"])
        assert ident is not None
        self.pid = ident.pid
        self.wait(succeeding, since=0, timeout=30)

    def go_pid(self) -> int:
        """The Go program: the container's process or its descendant."""
        root = psutil.Process(self.pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                gosql.plan(p.pid)
                return p.pid
            except gosql.GoSqlError:
                continue
        raise AssertionError("no Go program in the pod")


@pytest.fixture
def go_pods(system: System) -> Iterator[tuple[GoPod, GoPod]]:
    why = why_no_go() or (
        None
        if (gosql.native_dir() / "codepatch").exists()
        else f"{gosql.native_dir()}/codepatch is not built (make install builds native/)"
    )
    if why:
        pytest.skip(why)
    pods = (GoPod(system, "go-db", "sql"), GoPod(system, "go-other", "other-sql"))
    yield pods
    for p in pods:
        p.stop()
        system.cli("pod", "rm", p.name, check=False)


def records(system: System, kind: str, name: str) -> list[dict[str, Any]]:
    obj = system.get(kind, name) or {}
    return ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []


def injected(system: System, name: str) -> list[dict[str, Any]]:
    recs = records(system, "golangchaos", name)
    return recs if recs and all(r["phase"] == "Injected" for r in recs) else []


def both_calls_fail(pod: QueryLog, since: int) -> None:
    hits = pod.wait(failing, since=since, count=6, timeout=30)
    assert {r.call for r in hits} == {"query", "querycontext"} and {r.text for r in hits} == {gosql.MESSAGE}


def test_golangchaos_through_the_cli(system: System, go_pods: tuple[GoPod, GoPod]) -> None:
    db, other = go_pods
    mark, other_mark = db.mark(), other.mark()
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "GolangChaos",
            "sql",
            {"mode": "all", "selector": {"labelSelectors": {"app": "sql"}}, "action": "sql-error", "duration": "60s"},
        ),
    )
    recs = eventually(lambda: injected(system, "sql"), timeout=30)
    assert [r["id"] for r in recs] == ["default/go-db/go-db"]  # one container, named like its pod
    assert recs[0]["events"][-1]["message"].startswith("set sql query error to default/go-db/go-db: ")
    both_calls_fail(db, mark)
    assert all(r.ok for r in other.since(other_mark)) and other.since(other_mark)

    system.cli("delete", "golangchaos", "sql")
    after = db.mark()
    db.wait(succeeding, since=after, count=6, timeout=30)
    assert not gosql.plan(db.go_pid()).already
    assert all(r.ok for r in other.since(other_mark))


def test_golangchaos_as_a_workflow_step_ends_at_its_deadline(system: System, go_pods: tuple[GoPod, GoPod]) -> None:
    db = go_pods[0]
    mark = db.mark()
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "Workflow",
            "wf-sql",
            {
                "entry": "entry",
                "templates": [
                    {"name": "entry", "templateType": "Serial", "deadline": "60s", "children": ["sql"]},
                    {
                        "name": "sql",
                        "templateType": "GolangChaos",
                        "deadline": "10s",  # the code patch (ptrace stops, slow under load) lands inside it
                        "golangChaos": {
                            "mode": "all",
                            "selector": {"labelSelectors": {"app": "sql"}},
                            "duration": "60s",
                        },
                    },
                ],
            },
        ),
    )
    both_calls_fail(db, mark)
    db.wait(succeeding, since=db.mark(), count=6, timeout=30)  # the step's deadline recovers it
    eventually(lambda: not gosql.plan(db.go_pid()).already, timeout=30)
    system.cli("delete", "workflow", "wf-sql")


def _injector_pids(system: System) -> list[int]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "chaosbus.injector" in cmd and system.url in cmd:
            found.append(p.info["pid"])
    return found


def test_injector_kill9_mid_fault_then_restart_restores(system: System, go_pods: tuple[GoPod, GoPod]) -> None:
    db = go_pods[0]
    mark = db.mark()
    system.cli(
        "apply",
        "-f",
        "-",
        stdin=doc(
            "GolangChaos", "sql-k9", {"mode": "all", "selector": {"labelSelectors": {"app": "sql"}}, "duration": "120s"}
        ),
    )
    eventually(lambda: injected(system, "sql-k9"), timeout=30)
    both_calls_fail(db, mark)
    killed = _injector_pids(system)
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    both_calls_fail(db, db.mark())  # the patch outlives the injector; the program keeps running
    eventually(lambda: [p for p in _injector_pids(system) if p not in killed], timeout=30)
    system.cli("delete", "golangchaos", "sql-k9")
    db.wait(succeeding, since=db.mark(), count=6, timeout=40)
    assert psutil.Process(db.go_pid()).status() != psutil.STATUS_STOPPED


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"mode": "all", "selector": {"labelSelectors": {"app": "sql"}}}, "spec.duration"),
        (
            {"mode": "all", "selector": {"labelSelectors": {"app": "sql"}}, "duration": "30s", "action": "panic"},
            "spec.action",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field(system: System, spec: dict[str, Any], field: str) -> None:
    out = system.cli("apply", "-f", "-", stdin=doc("GolangChaos", "bad", spec), check=False)
    assert out.returncode != 0 and field in (out.stderr + out.stdout)
    assert system.get("golangchaos", "bad") is None
