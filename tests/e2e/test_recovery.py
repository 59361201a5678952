"""Faults are always recovered, end to end through `chaosbus up` and the CLI: a few cycles of the
chaos self-test (kill -9 of each component while experiments run; the full 200 cycles are
bench/chaos_selftest.py), and the kill switch used the way an operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.selftest import SelfTest

from chaosbus.injector.backends import nft

pytestmark = pytest.mark.privileged


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in ("nft", "nsenter", "tc"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


@pytest.fixture
def root() -> None:
    reason = _unavailable()
    if reason:
        print(f"skipping: {reason}")
        pytest.skip(reason)


def test_chaos_selftest_every_component_killed_once(root: None, tmp_path: Path) -> None:
    st = SelfTest(
        tmp_path,
        cycles=5,
        seed=6,
        schedule=["injector", "scheduler", "recorder", "nats-server"],
        kill_probability=0.0,
        max_duration=3.0,
        settle_s=40.0,
    )
    report = asyncio.run(st.run())
    print("\n" + "\n".join(report.lines()))
    assert set(report.kills) == {"injector", "scheduler", "recorder", "nats-server"}
    assert report.not_final == [] and report.leftovers == []


@pytest.fixture
def live(root: None, tmp_path: Path) -> Iterator[SelfTest]:
    st = SelfTest(tmp_path, cycles=0, pods=2)
    try:
        st.start()
        yield st
    finally:
        st.cli("resume", check=False)
        st.stop()
    assert st.scan_after_stop() == []


def partition(name: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "NetworkChaos",
            "metadata": {"name": name},
            "spec": {
                "action": "partition",
                "mode": "all",
                "direction": "both",
                "selector": {"fieldSelectors": {"metadata.name": "st-0"}},
                "target": {"mode": "all", "selector": {"fieldSelectors": {"metadata.name": "st-1"}}},
            },
        }
    )


def status(st: SelfTest, name: str) -> dict[str, Any]:
    done = st.cli("get", "networkchaos", name, "-o", "json", check=False)
    return (json.loads(done.stdout).get("status") or {}) if done.returncode == 0 else {}


def events(st: SelfTest, name: str) -> list[str]:
    records = (status(st, name).get("experiment") or {}).get("containerRecords") or []
    return [e["message"] for r in records for e in r.get("events", [])]


def tables(st: SelfTest) -> int:
    return sum(len([t for t in nft.list_tables(p) if t.startswith("chaosbus_")]) for p in st.pods.values())


def wait(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_halt_and_resume_from_the_cli(live: SelfTest) -> None:
    for name in ("h1", "h2"):
        done = live.cli_stdin(partition(name), "apply", "-f", "-")
        assert "created" in done
    wait(lambda: tables(live) == 4, 15, "both partitions in force")
    halted = time.monotonic()
    out = live.cli("halt", "--reason", "e2e drill").stdout
    assert "every injector recovers every fault" in out
    wait(lambda: tables(live) == 0, 15, "recovered by the halt")  # how fast is printed, and in make bench
    print(f"\nhalt via the CLI: 4 faults gone {time.monotonic() - halted:.2f}s after `chaosbus halt` started")
    wait(
        lambda: any("recovered: halted by kill switch (e2e drill" in m for m in events(live, "h1")),
        15,
        "status says why",
    )
    refused = live.cli_stdin(partition("h3"), "apply", "-f", "-", check=False)
    assert refused.startswith("error: chaosbus is halted by the kill switch") and "chaosbus resume" in refused
    assert "resumed" in live.cli("resume").stdout
    live.cli("delete", "networkchaos", "h1")
    assert "created" in live.cli_stdin(partition("h3"), "apply", "-f", "-")
    wait(lambda: tables(live) == 2, 15, "a new experiment runs after resume")
    assert any("already ended" in m or "halted" in m for m in events(live, "h2"))
    for name in ("h2", "h3"):
        live.cli("delete", "networkchaos", name)
    assert tables(live) == 0
