"""GolangChaos's node-side cost, on a real Go program: apply (gosql.inject: native/codepatch) ->
the first query that fails with the injected error, recovery (gosql.restore) -> the first query
that succeeds again, and how long the program is stopped each time. Target: the tests' sqlloop
(native/tests/sqlloop.go, built once and cached) with 4 goroutines querying every 2 ms.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.report import Row, Section, fmt_s, pct, summary
from chaosbus.injector.backends import gosql

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.gotargets import QueryLog, Result, sqlloop_argv, why_no_go  # noqa: E402

GOROUTINES = 4
INTERVAL_MS = 2
STOP_GOAL_S = 0.005  # the longest a process may be stopped, per process


def missing() -> str | None:
    """Why this bench cannot run here (None: it can)."""
    if not (gosql.native_dir() / "codepatch").exists():
        return f"{gosql.native_dir()}/codepatch is not built (make install builds native/)"
    return why_no_go()


def _first(log: QueryLog, since: int, ok: bool, after_ns: int) -> float:
    """Seconds from `after_ns` (wall clock) to the first result with that outcome, by the time the
    program itself printed with it."""
    hit: list[Result] = log.wait(lambda r: r.ok is ok and r.at_ns >= after_ns, since=since, timeout=10)
    return (hit[0].at_ns - after_ns) / 1e9


def measure(runs: int) -> dict[str, Any]:
    out: dict[str, list[float]] = {"apply": [], "recover": [], "apply_stop": [], "recover_stop": []}
    proc = subprocess.Popen(sqlloop_argv(GOROUTINES, INTERVAL_MS), stdout=subprocess.PIPE, text=True, bufsize=1)
    log = QueryLog().follow_pipe(proc)
    try:
        log.wait(lambda r: r.ok, since=0, timeout=30)
        plan = gosql.plan(proc.pid)
        originals = [(s.address, s.original) for s in plan.sites]
        for _ in range(runs):
            mark, t0 = log.mark(), time.time_ns()
            done = gosql.inject(plan)
            out["apply"].append(_first(log, mark, False, t0))
            out["apply_stop"].append(done.stopped_us / 1e6)
            mark, t1 = log.mark(), time.time_ns()
            stopped = gosql.restore(proc.pid, originals)
            out["recover"].append(_first(log, mark, True, t1))
            out["recover_stop"].append(stopped / 1e6)
    finally:
        log.stop()
        proc.kill()
        proc.wait()
    return out


def rows(raw: dict[str, Any]) -> Section:
    sec = Section(
        f"GolangChaos on one Go program ({GOROUTINES} goroutines querying every {INTERVAL_MS} ms), "
        "node side (native/codepatch)"
    )
    for op, what in (("apply", "apply -> first query failing"), ("recover", "recover -> first query succeeding")):
        lat, stop = raw[op], raw[f"{op}_stop"]
        row = Row(
            f"golangchaos.{op}", what, str(len(lat)), fmt_s(pct(lat, 50)), fmt_s(pct(lat, 99)), data={op: summary(lat)}
        )
        row.extra = f"process stopped p50 {fmt_s(pct(stop, 50))}, max {fmt_s(max(stop) if stop else float('nan'))}"
        row.target = f"stopped <= {fmt_s(STOP_GOAL_S)} per process"
        row.verdict = "met" if stop and max(stop) <= STOP_GOAL_S else "missed"
        row.data["stopped"] = summary(stop)
        sec.rows.append(row)
    return sec
