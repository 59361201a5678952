"""Targets for the time-skew tests: processes printing their clocks, read while they run.

Each line: "thread realtime_ns monotonic_ns boottime_ns gettimeofday_us time_s". A skew shows as a
change of (clock - boottime) between two lines, which is exact however loaded the machine is.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

NATIVE = Path(__file__).resolve().parents[2] / "native"

PYTHON_TARGET = r"""
import sys, threading, time
lock = threading.Lock()
def loop(i):
    while True:
        rt = time.clock_gettime_ns(time.CLOCK_REALTIME)
        mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        gtod = time.time_ns() // 1000
        with lock:
            print(i, rt, mono, boot, gtod, int(time.time()), flush=True)
        time.sleep(0.02)
for i in range(1, int(sys.argv[1])):
    threading.Thread(target=loop, args=(i,), daemon=True).start()
loop(0)
"""


def c_target_path() -> Path:
    """native/tests/clockprint.c, compiled once into native/build."""
    out = NATIVE / "build" / "clockprint"
    src = NATIVE / "tests" / "clockprint.c"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        out.parent.mkdir(exist_ok=True)
        subprocess.run(["cc", "-O2", "-pthread", "-o", str(out), str(src)], check=True)
    return out


class ClockTarget:
    """A running target and the lines it printed (each with the thread that printed it)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines: list[list[int]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    @classmethod
    def c(cls, threads: int = 1, prefix: list[str] | None = None) -> ClockTarget:
        return cls([*(prefix or []), str(c_target_path()), str(threads)])

    @classmethod
    def python(cls, threads: int = 1, prefix: list[str] | None = None) -> ClockTarget:
        return cls([*(prefix or []), sys.executable, "-c", PYTHON_TARGET, str(threads)])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append([int(x) for x in line.split()])
                self._cond.notify_all()

    def fresh(self, threads: int = 1, timeout: float = 5.0) -> dict[int, list[int]]:
        """One line per thread printed after this call (the latest of each)."""
        with self._cond:
            start = len(self.lines)
            seen: dict[int, list[int]] = {}
            deadline = time.monotonic() + timeout
            while len(seen) < threads:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"target {self.pid}: only threads {sorted(seen)} printed in {timeout}s")
                self._cond.wait(left)
                for row in self.lines[start:]:
                    seen[row[0]] = row
        return seen

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def realtime_skew(row: list[int]) -> int:
    """realtime - boottime (ns): moves by exactly the offset when CLOCK_REALTIME is skewed."""
    return row[1] - row[3]


def monotonic_skew(row: list[int]) -> int:
    return row[2] - row[3]


def gettimeofday_skew(row: list[int]) -> int:
    return row[4] * 1000 - row[3]
