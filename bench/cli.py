"""The `chaosbus` command as a user runs it, against the running session: the wall time of
`chaosbus get` (list the bench namespace's experiments) and of `chaosbus halt`, each a fresh
process through the installed entry point (interpreter start, imports, connect, one request, exit),
and a halt's full effect: from the command's start until the kernel shows every fault of a running
experiment gone on every node.
"""

from __future__ import annotations

import asyncio
import compileall
import shutil
import sys
import time
from pathlib import Path

from bench.scenarios import KIND, Harness, experiment_yaml
from bench.targets import GROUP_LABEL, NAMESPACE
from chaosbus.injector.faults.partition import table_name

ROOT = Path(__file__).resolve().parents[1]


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


async def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-3:])} exited {proc.returncode}: {err.decode()[-500:]}")
    return took


async def measure(h: Harness, url: str, runs: int, halt_runs: int, size: int) -> dict[str, list[float]]:
    cli = [*command(), "--nats", url]
    out: dict[str, list[float]] = {"get": [], "halt": [], "halt_gone": [], "halt_missing": []}
    await asyncio.to_thread(precompile)
    await _timed([*cli, "get", "networkchaos", "-n", NAMESPACE])  # page cache and .pyc warm, as for a user
    for _ in range(runs):
        out["get"].append(await _timed([*cli, "get", "networkchaos", "-n", NAMESPACE]))
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
        out["halt"].append(await _timed([*cli, "halt", "--reason", "bench"]))
        gone = await h.wait_tables(pairs, False, t0, 30.0)
        out["halt_gone"] += [max(g for g in gone if g is not None) - t0] if all(g is not None for g in gone) else []
        out["halt_missing"].append(float(sum(g is None for g in gone)))
        await _timed([*cli, "resume"])
        if await h.delete_and_wait(name, 30.0) is None:
            raise RuntimeError(f"{name}: {KIND} not removed within 30 s after the halt")
    return out
