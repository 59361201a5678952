"""TimeChaos's node-side cost, on real processes: apply (native/timeskew inject) -> the offset
visible in what the target prints, the longest time a target process is stopped by ptrace, and
the same for recovery. Targets: native/build/clockprint with 4 threads printing every 2 ms.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from typing import Any

from bench.report import Row, Section, fmt_s, pct, summary
from chaosbus.injector.backends import timeskew

OFFSET_NS = -3600 * 10**9
THREADS = 4
PRINT_EVERY_US = 2000
STOP_GOAL_S = 0.005  # the longest a process may be stopped, per process


class _Target:
    def __init__(self) -> None:
        argv = [str(timeskew.native_dir() / "clockprint"), str(THREADS), str(PRINT_EVERY_US)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue[int] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 6:
                self.lines.put(int(parts[1]) - int(parts[3]))  # realtime - boottime

    def wait_skew(self, base: int, offset: int, timeout: float = 5.0) -> float:
        """Seconds until a line shows `offset` against `base` (within 10 ms)."""
        deadline = time.perf_counter() + timeout
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError("the target never showed the offset")
            if abs(self.lines.get(timeout=left) - base - offset) < 10**7:
                return time.perf_counter()

    def baseline(self) -> int:
        return self.lines.get(timeout=5.0)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def measure(runs: int) -> dict[str, Any]:
    out: dict[str, list[float]] = {"apply": [], "recover": [], "apply_stop": [], "recover_stop": []}
    for _ in range(runs):
        target = _Target()
        try:
            base = target.baseline()
            patches = timeskew.plan(target.proc.pid)
            t0 = time.perf_counter()
            done = timeskew.inject(target.proc.pid, OFFSET_NS, 1, 0)
            out["apply"].append(target.wait_skew(base, OFFSET_NS) - t0)
            out["apply_stop"].append(done.stopped_us / 1e6)
            t1 = time.perf_counter()
            stopped = timeskew.restore(target.proc.pid, patches)
            out["recover"].append(target.wait_skew(base, 0) - t1)
            out["recover_stop"].append(stopped / 1e6)
        finally:
            target.stop()
    return out


def rows(raw: dict[str, Any]) -> Section:
    sec = Section(f"TimeChaos on one process ({THREADS} threads), node side (native/timeskew)")
    for op in ("apply", "recover"):
        lat, stop = raw[op], raw[f"{op}_stop"]
        row = Row(
            f"timechaos.{op}",
            f"{op} -> offset {'visible' if op == 'apply' else 'gone'} in the target's output",
            str(len(lat)),
            fmt_s(pct(lat, 50)),
            fmt_s(pct(lat, 99)),
            data={op: summary(lat)},
        )
        row.extra = f"process stopped p50 {fmt_s(pct(stop, 50))}, max {fmt_s(max(stop) if stop else float('nan'))}"
        row.target = f"stopped <= {fmt_s(STOP_GOAL_S)} per process"
        row.verdict = "met" if stop and max(stop) <= STOP_GOAL_S else "missed"
        row.data["stopped"] = summary(stop)
        sec.rows.append(row)
    return sec
