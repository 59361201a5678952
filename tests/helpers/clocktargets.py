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
        for _ in range(20):  # again when preempted between the reads (see clockprint.c)
            boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            rt = time.clock_gettime_ns(time.CLOCK_REALTIME)
            mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            gtod = time.time_ns() // 1000
            if time.clock_gettime_ns(time.CLOCK_BOOTTIME) - boot < 2_000_000:
                break
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


class ClockLines:
    """The lines a target printed (each with the thread that printed it), fed by a reader thread."""

    def __init__(self) -> None:
        self.lines: list[list[int]] = []
        self._cond = threading.Condition()

    def _feed(self, line: str) -> None:
        parts = line.split()
        if len(parts) != 6 or not all(p.lstrip("-").isdigit() for p in parts):
            return  # a partly written line, or the pod supervisor's own output
        with self._cond:
            self.lines.append([int(x) for x in parts])
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
                    raise AssertionError(f"only threads {sorted(seen)} printed in {timeout}s")
                self._cond.wait(left)
                for row in self.lines[start:]:
                    seen[row[0]] = row
        return seen


class ClockTarget(ClockLines):
    """A target process started here, its stdout read as it runs."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()

    @classmethod
    def c(cls, threads: int = 1) -> ClockTarget:
        return cls(c_argv(threads))

    @classmethod
    def python(cls, threads: int = 1) -> ClockTarget:
        return cls(python_argv(threads))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._feed(line)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class ClockLog(ClockLines):
    """A target's output file (a process pod's log), followed from its current end."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._stop = threading.Event()
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        while not self.path.exists() and not self._stop.wait(0.02):
            pass
        with self.path.open() as f:
            f.seek(0, 2)
            partial = ""
            while not self._stop.is_set():
                chunk = f.read()
                if not chunk:
                    self._stop.wait(0.01)
                    continue
                partial += chunk
                *done, partial = partial.split("\n")
                for line in done:
                    self._feed(line)

    def stop(self) -> None:
        self._stop.set()


def c_argv(threads: int = 1) -> list[str]:
    return [str(c_target_path()), str(threads)]


def python_argv(threads: int = 1) -> list[str]:
    return [sys.executable, "-c", PYTHON_TARGET, str(threads)]


def realtime_skew(row: list[int]) -> int:
    """realtime - boottime (ns): moves by exactly the offset when CLOCK_REALTIME is skewed."""
    return row[1] - row[3]


def monotonic_skew(row: list[int]) -> int:
    return row[2] - row[3]


def gettimeofday_skew(row: list[int]) -> int:
    return row[4] * 1000 - row[3]
