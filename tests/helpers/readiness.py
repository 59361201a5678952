"""A service process as a test drives it: its /readyz answer on the metrics port, and stopping its
process group (SIGTERM, then SIGKILL for one that does not end within 10 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any


def readyz(port: int) -> tuple[int, str]:
    """(status, body) of GET /readyz; (0, why) where nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, f"not served: {e}"


def readyz_until(port: int, status: int, within_s: float, saying: str = "") -> tuple[int, str]:
    """The first /readyz answer with `status` and `saying` in its body, or the last one seen
    within `within_s`."""
    deadline = time.monotonic() + within_s
    while ((got := readyz(port))[0] != status or saying not in got[1]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


def stop_groups(*procs: subprocess.Popen[Any]) -> None:
    """Stop each process's group (started with start_new_session): all asked at once, then waited for."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
