"""The `chaosbus` command as a user runs it, against the running session: the wall time of
`chaosbus get` (list the bench namespace's experiments) and of `chaosbus halt`, each a fresh
process through the installed entry point (interpreter start, imports, connect, one request, exit),
and a halt's full effect: from the command's start until the kernel shows every fault of a running
experiment gone on every node.

Each run also gives the command's own CPU time (the kernel's account of the child, wait4), so that
a slow run shows whether the command worked more or waited for a busy machine, and a floor runs
between the `get`s: an interpreter that imports asyncio and ends, the least any asyncio command
costs on this machine at that moment. The phase starts once the machine is idle again after the
phases before it (deleting 300 experiments leaves the services and the kernel busy for seconds).
"""

from __future__ import annotations

import asyncio
import compileall
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.scenarios import KIND, Harness, experiment_yaml
from bench.targets import GROUP_LABEL, NAMESPACE
from chaosbus.injector.faults.partition import table_name

ROOT = Path(__file__).resolve().parents[1]
SETTLED_BUSY = 0.5  # the CLI phase starts once the 2-core machine is at most half busy over a second


def precompile() -> None:
    """Byte-compile the sources as pip does when it installs a wheel: an editable install under
    PYTHONDONTWRITEBYTECODE=1 would otherwise compile ~40 modules from source on every command,
    doubling its start-up, which no installed chaosbus pays.
    """
    for folder in ("libs", "services", "cli"):
        compileall.compile_dir(ROOT / folder, quiet=1)


def command() -> list[str]:
    """The console script installed beside this interpreter (what `chaosbus` runs), else `-m`."""
    script = shutil.which("chaosbus", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "chaosbus.cli"]


@dataclass(frozen=True)
class Timed:
    wall: float
    cpu: float  # user + system seconds of the command's process


def _run(argv: list[str]) -> Timed:
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-3:])} exited {proc.returncode}: {err.decode()[-500:]}")
    return Timed(took, usage.ru_utime + usage.ru_stime)


async def _timed(argv: list[str]) -> Timed:
    return await asyncio.to_thread(_run, argv)


def _busy_fraction(window_s: float) -> float:
    """The share of the machine's CPU time spent busy over the next `window_s` (/proc/stat)."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        idle = ticks[3] + ticks[4]  # idle + iowait
        return sum(ticks), idle

    total0, idle0 = read()
    time.sleep(window_s)
    total1, idle1 = read()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


async def settle(limit: float = SETTLED_BUSY, window_s: float = 1.0, timeout_s: float = 30.0) -> float:
    """Wait until the machine's busy share over a second is below `limit` (at most `timeout_s`);
    the seconds waited.
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if await asyncio.to_thread(_busy_fraction, window_s) < limit:
            break
    return time.monotonic() - t0


async def measure(h: Harness, url: str, runs: int, halt_runs: int, size: int) -> dict[str, list[float]]:
    cli = [*command(), "--nats", url]
    out: dict[str, list[float]] = {
        k: [] for k in ("get", "get_cpu", "floor", "floor_cpu", "halt", "halt_cpu", "halt_gone", "halt_missing")
    }
    await asyncio.to_thread(precompile)
    out["settled_s"] = [await settle()]
    await _timed([*cli, "get", "networkchaos", "-n", NAMESPACE])  # page cache and .pyc warm, as for a user
    for _ in range(runs):
        run = await _timed([*cli, "get", "networkchaos", "-n", NAMESPACE])
        out["get"].append(run.wall)
        out["get_cpu"].append(run.cpu)
        floor = await _timed([sys.executable, "-c", "import asyncio"])
        out["floor"].append(floor.wall)
        out["floor_cpu"].append(floor.cpu)
    targets = [t for t in h.targets if t.index < size]
    for i in range(halt_runs):
        name = f"halt-{i}"
        t_apply = time.time()
        uid, _ = await h.apply(experiment_yaml(name, {GROUP_LABEL.format(size=size): "y"}))
        pairs = [(t.netns, table_name(uid, ".")) for t in targets]
        applied = await h.wait_tables(pairs, True, t_apply, 30.0)
        if any(a is None for a in applied):
            raise RuntimeError(f"{name}: not in effect on every target within 30 s")
        t0 = time.time()
        run = await _timed([*cli, "halt", "--reason", "bench"])
        out["halt"].append(run.wall)
        out["halt_cpu"].append(run.cpu)
        gone = await h.wait_tables(pairs, False, t0, 30.0)
        out["halt_gone"] += [max(g for g in gone if g is not None) - t0] if all(g is not None for g in gone) else []
        out["halt_missing"].append(float(sum(g is None for g in gone)))
        await _timed([*cli, "resume"])
        if await h.delete_and_wait(name, 30.0) is None:
            raise RuntimeError(f"{name}: {KIND} not removed within 30 s after the halt")
    return out
