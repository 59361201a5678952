"""The Go target of the GolangChaos tests and `make bench`: native/tests/sqlloop.go (standard
library only, a one-row database/sql driver of its own) built once per source and Go version and
cached under the temp dir (Go builds take a while on two loaded cores), and its output read as it
runs. Each line: "unix_ns goroutine query|querycontext ok 1" or "... err MESSAGE".
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SOURCES = Path(__file__).resolve().parents[2] / "native" / "tests"
SOURCE = SOURCES / "sqlloop.go"
BUILD_TIMEOUT_S = 600


def why_no_go() -> str | None:
    """Why the Go target cannot be built here (None: it can)."""
    if shutil.which("go") is None:
        return "no Go toolchain (`go`; scripts/install-system-deps.sh installs Debian's golang-go)"
    return None


def go_binary(source: Path = SOURCE, *flags: str) -> Path:
    """`source` built with `flags` (e.g. "-ldflags=-s"), from the cache when this source was built
    with them by this Go before."""
    go = shutil.which("go")
    assert go is not None, why_no_go()
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(source.read_bytes() + version.encode() + " ".join(flags).encode()).hexdigest()[:16]
    root = Path(tempfile.gettempdir()) / f"chaosbus-go-{os.getuid()}"
    out = root / key / source.stem
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # One build at a time across test workers (two cores): the others wait, then find it built.
    with open(root / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists():
            return out
        partial = out.parent / f"{source.stem}.{os.getpid()}.{threading.get_ident()}"
        env = {
            **os.environ,
            "CGO_ENABLED": "0",
            "GOFLAGS": "",
            "GO111MODULE": "off",
            "GOTOOLCHAIN": "local",
            "GOCACHE": str(root / "gocache"),
            "GOPATH": str(root / "gopath"),
        }
        subprocess.run(
            [go, "build", *flags, "-o", str(partial), str(source)],
            env=env,
            check=True,
            capture_output=True,
            timeout=BUILD_TIMEOUT_S,
        )
        os.replace(partial, out)  # whole or not at all
    return out


def sqlloop_binary() -> Path:
    return go_binary(SOURCE)


def sqlloop_argv(goroutines: int = 2, interval_ms: int = 20) -> list[str]:
    return [str(sqlloop_binary()), str(goroutines), str(interval_ms)]


@dataclass(frozen=True)
class Result:
    at_ns: int
    goroutine: int
    call: str  # query or querycontext
    ok: bool
    text: str  # "1", or the error's message


def parse(line: str) -> Result | None:
    parts = line.rstrip("\n").split(" ", 4)
    if len(parts) != 5 or not parts[0].isdigit() or parts[3] not in ("ok", "err"):
        return None  # a partly written line, or the pod supervisor's own output
    return Result(int(parts[0]), int(parts[1]), parts[2], parts[3] == "ok", parts[4])


class QueryLog:
    """The results a target printed, from a file (a process pod's log) or a pipe, as it runs."""

    def __init__(self) -> None:
        self.results: list[Result] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()

    def _feed(self, line: str) -> None:
        r = parse(line)
        if r is not None:
            with self._cond:
                self.results.append(r)
                self._cond.notify_all()

    def follow_file(self, path: Path) -> QueryLog:
        threading.Thread(target=self._follow, args=(path,), daemon=True).start()
        return self

    def _follow(self, path: Path) -> None:
        while not path.exists() and not self._stop.wait(0.02):
            pass
        with path.open() as f:
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

    def follow_pipe(self, proc: subprocess.Popen[str]) -> QueryLog:
        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self._feed(line)

        threading.Thread(target=read, daemon=True).start()
        return self

    def mark(self) -> int:
        with self._cond:
            return len(self.results)

    def wait(self, pred: object, since: int | None = None, timeout: float = 20.0, count: int = 1) -> list[Result]:
        """The first `count` results after position `since` (default: now) for which `pred` holds,
        waiting up to `timeout` seconds."""
        assert callable(pred)
        with self._cond:
            start = len(self.results) if since is None else since
            deadline = time.monotonic() + timeout
            while True:
                hits = [r for r in self.results[start:] if pred(r)]
                if len(hits) >= count:
                    return hits[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = [f"{r.call} {'ok' if r.ok else 'err'} {r.text}" for r in self.results[-3:]]
                    raise AssertionError(f"no such result in {timeout}s (last: {tail})")
                self._cond.wait(left)

    def since(self, start: int) -> list[Result]:
        with self._cond:
            return list(self.results[start:])

    def stop(self) -> None:
        self._stop.set()


def failing(r: Result) -> bool:
    return not r.ok


def succeeding(r: Result) -> bool:
    return r.ok
