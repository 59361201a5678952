"""Where the native helpers (native/, built by `make install`) are, and running a program inside
a target's namespaces through native/nsexec (no `nsenter` on the fault path).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from chaosbus.common import settings

NSEXEC_FAILED = 125  # nsexec's own failure (the reason on stderr), as opposed to the program's status


def native_dir() -> Path:
    """Where the native helpers were built: `$CHAOSBUS_NATIVE_DIR`, else the checkout's native/build."""
    env = settings.current().native_dir
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "native" / "build"


def helper(name: str) -> str:
    """The path of native helper `name`.

    Raises:
        FileNotFoundError: it was not built.
    """
    path = native_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (native/ is built by `make install`)")
    return str(path)


def run_in_target(pid: int, argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
    """Run the host program `argv` (no shell) in `pid`'s cgroup and its cgroup, network and PID
    namespaces, seeing the target's /proc (native/nsexec; see native/README.md).

    Returns:
        (exit code, stdout, stderr); -1 with the reason in stderr on timeout or a missing helper.
    """
    if isinstance(argv, (str, bytes)) or not argv:
        raise TypeError("argv must be a non-empty list of strings")
    try:
        cmd = [helper("nsexec"), "--target", str(int(pid)), "--", *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as e:
        return -1, "", str(e)
    except subprocess.TimeoutExpired:
        return -1, "", f"timed out after {timeout}s: {argv[0]}"
    return proc.returncode, proc.stdout, proc.stderr


def ns_pid(pid: int) -> int:
    """`pid` as the target's own PID namespace numbers it (the last NSpid of /proc/<pid>/status);
    `pid` itself when it cannot be read."""
    try:
        with open(f"/proc/{int(pid)}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return pid
