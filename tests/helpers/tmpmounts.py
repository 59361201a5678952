"""Mounts an earlier, interrupted test run left under pytest's temporary root.

The real node's kubelet mounts each pod's volumes (tmpfs) and containerd its sandboxes' shm and
netns files under the node's folder in the run's temporary directory; the node's teardown undoes
them. A run killed before that teardown leaves them mounted, and a later run's pytest, deleting
old numbered folders at its end, fails on them with EBUSY. The controller therefore releases, at
the start of a run, the mounts under every folder pytest itself would delete: a `garbage-*`
folder, or a numbered folder whose `.lock` is gone or names a process no longer alive. A run still
going keeps its lock, so its mounts are never touched.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import psutil


def temp_root() -> Path:
    """The folder pytest makes its numbered run folders in (`pytest-of-<user>`)."""
    base = os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir()
    return Path(base).resolve() / f"pytest-of-{getpass.getuser()}"


def _unescape(field: str) -> str:
    """/proc/self/mounts writes space, tab, newline and backslash as octal escapes."""
    for escaped, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escaped, char)
    return field


def _abandoned(folder: Path, alive: Callable[[int], bool]) -> bool:
    if folder.name.startswith("garbage-"):
        return True
    try:
        owner = (folder / ".lock").read_text().strip()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return not (owner.isdigit() and alive(int(owner)))


def stale(root: Path, mounts: str, alive: Callable[[int], bool] = psutil.pid_exists) -> list[str]:
    """The mount points under `root` that belong to abandoned run folders, deepest first."""
    found = []
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        point = Path(_unescape(fields[1]))
        if root not in point.parents:
            continue
        top = root / point.relative_to(root).parts[0]
        if top != point and _abandoned(top, alive):
            found.append(str(point))
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def release(root: Path | None = None) -> list[str]:
    """Lazily unmount the stale mounts under `root` (pytest's temporary root); the ones released."""
    root = root or temp_root()
    released = []
    for point in stale(root, Path("/proc/self/mounts").read_text()):
        if subprocess.run(["umount", "-l", point], capture_output=True).returncode == 0:
            released.append(point)
    return released
