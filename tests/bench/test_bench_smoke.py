"""Smoke test of the benchmark harness: its quick mode at the smallest sizes prints a row
for every figure, writes valid JSON and leaves nothing behind. Figures are never asserted here:
the benchmark prints PASS/FAIL itself, and a shared 2-core machine is no place to judge them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
    "apply.1",
    "apply.2",
    "apply.2.all",
    "recover.delete.1",
    "recover.pause.1",
    "expiry.1",
    "recover.delete.2",
    "recover.pause.2",
    "expiry.2",
    "breakdown.stored",
    "breakdown.command",
    "breakdown.injector",
    "breakdown.result",
    "breakdown.status",
    "breakdown.2.first",
    "breakdown.2.status",
    "floor.nats_rr",
    "floor.nft_spawn_apply",
    "floor.nft_spawn_delete",
    "floor.netlink_rr",
    "floor.readback",
    "concurrent.2",
    "concurrent.2.recover",
    "svc.watcher",
    "svc.scheduler",
    "svc.recorder",
    "svc.injector",
    "svc.nats-server",
    "status.size",
    "cli.get",
    "cli.halt",
    "cli.halt.gone",
    "security.sign_verify.1",
    "security.sign_verify.100",
    "security.apply.1",
    "security.apply.2",
]


@pytest.mark.privileged
@pytest.mark.timeout(300)
def test_quick_bench_prints_every_figure_and_writes_json(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the benchmark creates network namespaces and reads nftables")
    out = tmp_path / "bench.json"
    argv = [
        sys.executable,
        "-m",
        "bench",
        "--quick",
        "--sizes",
        "1,2",
        "--nodes",
        "2",
        "--runs",
        "3",
        "--concurrent",
        "2",
        "--idle",
        "0.5",
        "--json",
        str(out),
    ]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    printed = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert [r for r in ROWS if r not in printed] == []
    assert "cleanup: nothing left behind" in done.stdout
    doc = json.loads(out.read_text())
    ids = {row["id"] for section in doc["figures"] for row in section["rows"]}
    assert [r for r in ROWS if r not in ids] == []
    assert {"meta", "floors", "runs", "resources", "concurrent"} <= set(doc)
    assert all(r["missing"] == 0 and r["verify_errors"] == 0 for r in doc["runs"])


@pytest.mark.privileged
@pytest.mark.timeout(200)
def test_the_api_server_bench_times_every_size_and_the_watcher(tmp_path: Path) -> None:
    """`bench_kube` at two sizes against the in-repo API fake (the real server's run is the same
    code): a row per size for apply, recovery and the watcher's lag."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the benchmark creates network namespaces and reads nftables")
    env = {k: v for k, v in os.environ.items() if k not in ("KUBEBUILDER_ASSETS", "CHAOSBUS_TEST_KUBECONFIG")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_kube", "--runs", "2", "--sizes", "1,3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-12000:]
    printed = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    wanted = {f"kube.{what}.{n}" for what in ("apply", "recover", "removed", "watch_lag") for n in (1, 3)}
    assert wanted <= printed, done.stdout


@pytest.mark.privileged
@pytest.mark.timeout(120)
def test_the_node_bench_times_each_way_and_leaves_no_netns(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the node bench creates a network namespace and nftables tables")
    argv = [sys.executable, "-m", "bench.bench_node", "--runs", "3", "--dir", str(tmp_path)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=100)
    done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if done.returncode == 2 and "libnftables is not usable" in done.stderr:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("as deployed", "fresh context"))]
    assert len(rows) == 3 and all(line.count(" ms") == 4 for line in rows), done.stdout
    # Its own netns only (named after its pid): another bench test may run beside it.
    mine = {n for n in os.listdir("/var/run/netns") if n == f"cbbnode{proc.pid}"}
    assert mine == set(), f"left behind: {mine}"


@pytest.mark.privileged
@pytest.mark.timeout(120)
def test_the_lease_bench_times_each_way_through_real_injectors(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the lease bench creates a network namespace and nftables tables")
    argv = [sys.executable, "-m", "bench.bench_lease", "--runs", "3", "--dir", str(tmp_path)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=100)
    done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if done.returncode == 2 and "libnftables is not usable" in done.stderr:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("unsigned, lease", "signed, lease"))]
    assert len(rows) == 3 and all(line.count(" ms") == 2 for line in rows), done.stdout
    # Its own netns only (named after its pid): another bench test may run beside it.
    mine = {n for n in os.listdir("/var/run/netns") if n == f"cbbnode{proc.pid}"}
    assert mine == set(), f"left behind: {mine}"


@pytest.mark.privileged
@pytest.mark.timeout(120)
def test_the_restart_bench_times_first_and_warm_applies_and_leaves_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the restart bench creates network namespaces and nftables tables")
    argv = [sys.executable, "-m", "bench.bench_restart", "--restarts", "2", "--warm", "2", "--idle", "1"]
    argv += ["--dir", str(tmp_path)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=100)
    assert proc.returncode == 0, out[-4000:] + err[-4000:]
    rows = {" ".join(line.split()[:-6]) for line in out.splitlines() if line.endswith(" ms")}  # kind, count
    assert {"first 2", "first in netns 2", "warm 4", "after idle 2"} <= rows, out
    assert "first/warm p50" in out and "target: first <= 2x warm at p50:" in out
    mine = {n for n in os.listdir("/var/run/netns") if n.startswith(f"cbb{proc.pid}-")}
    assert mine == set(), f"left behind: {mine}"
