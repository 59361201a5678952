"""Optional sampling profiles of the services while the largest size runs (`--profile`): py-spy
(`pip install py-spy`, in the dev extras) attached to the running processes without pausing them,
folded stacks written next to the JSON, and the top functions by own and inclusive time summarised.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    def __init__(self, outdir: Path, targets: dict[str, int], rate: int = 100, tag: str = "") -> None:
        self.outdir, self.targets, self.rate, self.tag = outdir, targets, rate, tag
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.files: dict[str, Path] = {}

    def start(self) -> bool:
        exe = py_spy()
        if exe is None:
            return False
        self.outdir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.targets.items():
            path = self.outdir / f"{name.replace('/', '-')}.folded"
            argv = [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(self.rate),
                "--nonblocking",
                "--threads",
                "--format",
                "raw",
                "--output",
                str(path),
            ]
            self.procs[name] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.files[name] = path
        return True

    def stop(self) -> dict[str, dict[str, list[tuple[str, float]]]]:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        out = {}
        for name, path in self.files.items():
            with contextlib.suppress(OSError):
                out[name] = summarize(path.read_text())
        return out


OURS = ("scheduler/", "injector/", "recorder/", "watcher/", "common/", "cli/")
WRAPPERS = ("run (common/service.py)", "_supervise (common/service.py)", "run_forever (common/service.py)")


def _frame(text: str) -> str:
    # "function (path/to/package/module.py:123)" -> "function (package/module.py)"
    name, _, where = text.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    short = "/".join(path.split("/")[-2:])
    return f"{name} ({short})" if short else name


def summarize(folded: str, top: int = 12) -> dict[str, list[tuple[str, float]]]:
    """Top frames by own samples and by inclusive samples (share of all samples)."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    if not total:
        return {"own": [], "inclusive": [], "samples": []}
    return {
        "own": [(f, c / total) for f, c in own.most_common(top)],
        "inclusive": [
            (f, c / total)
            for f, c in incl.most_common()
            if any(f"({o}" in f for o in OURS) and f not in WRAPPERS and "__main__.py" not in f
        ][:top],
        "samples": [("total", float(total))],
    }
