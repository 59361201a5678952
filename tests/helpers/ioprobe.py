"""File operations run inside a target's mount namespace, timed: what a program on the target's
volume sees while IOChaos is in force.

`probe(pid, ops)` runs this file with `nsenter --mount` (tests only; the fault path never does) and
returns one `Result` per op. Ops: ("read", path) opens, reads once (up to 1 MiB: one read call,
timed alone), closes; ("readall", path, chunk) reads to the end in reads of `chunk` bytes (value:
how many bytes); ("stat", path); ("write", path, text); ("open", path) opens and closes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Result:
    errno: int  # 0: it worked
    seconds: float
    value: Any  # read: the text (latin-1); stat: [size, perm, mtime]; else None


def probe(pid: int, ops: list[tuple[str, ...]], timeout: float = 60.0) -> list[Result]:
    out = subprocess.run(
        ["nsenter", "-t", str(pid), "-m", "--", sys.executable, "-S", __file__, json.dumps(ops)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return [Result(*r) for r in json.loads(out.stdout)]


def _one(op: list[str]) -> list[Any]:
    kind, path = op[0], op[1]
    t = time.perf_counter()
    try:
        if kind == "read":
            fd = os.open(path, os.O_RDONLY)
            try:
                t = time.perf_counter()
                value: Any = os.read(fd, 1 << 20).decode("latin-1")
                elapsed = time.perf_counter() - t
            finally:
                os.close(fd)
            return [0, elapsed, value]
        elif kind == "readall":
            fd = os.open(path, os.O_RDONLY)
            try:
                value = 0
                while chunk := os.read(fd, int(op[2])):
                    value += len(chunk)
            finally:
                os.close(fd)
        elif kind == "stat":
            st = os.stat(path)
            value = [st.st_size, st.st_mode & 0o7777, st.st_mtime]
        elif kind == "write":
            with open(path, "w") as f:
                f.write(op[2])
            value = None
        else:
            os.close(os.open(path, os.O_RDONLY))
            value = None
    except OSError as e:
        return [e.errno or -1, time.perf_counter() - t, None]
    return [0, time.perf_counter() - t, value]


if __name__ == "__main__":
    print(json.dumps([_one(op) for op in json.loads(sys.argv[1])]))
