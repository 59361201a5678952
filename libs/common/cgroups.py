"""Control groups of local process pods, and of any process a fault must act inside.

A process pod gets one cgroup named after its sandbox (its netns name) under `chaosbus/`: on
cgroup v2 when the unified hierarchy offers the cpu, memory and pids controllers, else in each of
the v1 hierarchies cpu, cpuacct, memory, freezer and pids (hybrid hosts such as this project's CI
mount v2 without controllers). Faults that must run something inside a target's cgroup read the
target's own membership from /proc/<pid>/cgroup, so they work for containers as well as for
process pods. Plain file writes only: no cgcreate, no systemd.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass

ROOT = "/sys/fs/cgroup"
PARENT = "chaosbus"
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "freezer", "pids")
V2_CONTROLLERS = ("cpu", "memory", "pids")


@dataclass(frozen=True)
class Layout:
    """Where the hierarchies a pod cgroup lives in are mounted."""

    version: int  # 1 or 2
    mounts: tuple[str, ...]  # v2: the unified mount; v1: one mount per hierarchy (deduplicated)


@dataclass(frozen=True)
class PodCgroup:
    name: str
    dirs: tuple[str, ...]  # one directory per hierarchy

    @property
    def path(self) -> str:
        """The cgroup's path inside its hierarchies, as /proc/<pid>/cgroup shows it."""
        return f"/{PARENT}/{self.name}"


def _v2_mount(root: str) -> str | None:
    for mount in (root, os.path.join(root, "unified")):
        try:
            with open(os.path.join(mount, "cgroup.controllers")) as f:
                available = set(f.read().split())
        except OSError:
            continue
        if set(V2_CONTROLLERS) <= available:
            return mount
    return None


def layout(root: str = ROOT) -> Layout:
    """The hierarchies to use on this machine.

    Raises:
        RuntimeError: neither a v2 hierarchy with the controllers nor all the v1 ones is mounted.
    """
    v2 = _v2_mount(root)
    if v2 is not None:
        return Layout(2, (v2,))
    mounts: dict[str, None] = {}
    for controller in V1_CONTROLLERS:
        path = os.path.join(root, controller)
        if not os.path.isdir(path):
            raise RuntimeError(
                f"no cgroup v2 with {', '.join(V2_CONTROLLERS)} and no v1 {controller} hierarchy at {path}"
            )
        mounts[os.path.realpath(path)] = None
    return Layout(1, tuple(mounts))


def pod_cgroup(name: str, where: Layout | None = None) -> PodCgroup:
    """The cgroup a pod named `name` (its sandbox name) has (whether or not it exists yet)."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid cgroup name {name!r}")
    lay = where or layout()
    return PodCgroup(name, tuple(os.path.join(m, PARENT, name) for m in lay.mounts))


def create(name: str, where: Layout | None = None) -> PodCgroup:
    """Create the pod's cgroup in every hierarchy (idempotent)."""
    lay = where or layout()
    cg = pod_cgroup(name, lay)
    if lay.version == 2:
        _enable_controllers(lay.mounts[0])
        os.makedirs(os.path.join(lay.mounts[0], PARENT), exist_ok=True)
        _enable_controllers(os.path.join(lay.mounts[0], PARENT))
    for d in cg.dirs:
        os.makedirs(d, exist_ok=True)
    return cg


def _enable_controllers(directory: str) -> None:
    for c in V2_CONTROLLERS:
        with contextlib.suppress(OSError), open(os.path.join(directory, "cgroup.subtree_control"), "w") as f:
            f.write(f"+{c}")


def procs(directory: str) -> list[int]:
    """The pids in one cgroup directory (none if it is gone)."""
    try:
        with open(os.path.join(directory, "cgroup.procs")) as f:
            return [int(line) for line in f.read().split()]
    except FileNotFoundError:
        return []


def join(dirs: tuple[str, ...] | list[str], pid: int = 0) -> None:
    """Move process `pid` (0: the caller) into every directory of `dirs`."""
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(pid or os.getpid()))


def remove(cg: PodCgroup, wait_s: float = 2.0) -> bool:
    """Kill what is left inside the pod's cgroup and remove it from every hierarchy.

    Returns:
        True if a directory was removed.
    """
    removed = False
    for d in cg.dirs:
        deadline = time.monotonic() + wait_s
        while True:
            for pid in procs(d):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                os.rmdir(d)
                removed = True
                break
            except FileNotFoundError:
                break
            except OSError as e:
                # EBUSY: killed processes are still exiting.
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
    return removed


def leftovers(root: str = ROOT) -> list[str]:
    """Pod cgroups still present under `chaosbus/` in any hierarchy, as `<mount>/chaosbus/<name>`."""
    found = []
    try:
        lay = layout(root)
    except RuntimeError:
        return []
    for m in lay.mounts:
        with contextlib.suppress(FileNotFoundError):
            parent = os.path.join(m, PARENT)
            found += [
                os.path.join(parent, n) for n in sorted(os.listdir(parent)) if os.path.isdir(os.path.join(parent, n))
            ]
    return found


def of_process(pid: int, root: str = ROOT) -> list[str]:
    """The directories of the cgroups process `pid` is in, for the hierarchies chaosbus uses.

    Raises:
        FileNotFoundError: no such process.
    """
    lay = layout(root)
    with open(f"/proc/{pid}/cgroup") as f:
        lines = f.read().splitlines()
    out: dict[str, None] = {}
    for line in lines:
        hid, controllers, path = line.split(":", 2)
        if lay.version == 2:
            if hid == "0":
                out[os.path.join(lay.mounts[0], path.lstrip("/"))] = None
            continue
        for c in controllers.split(","):
            if c in V1_CONTROLLERS:
                out[os.path.join(os.path.realpath(os.path.join(root, c)), path.lstrip("/"))] = None
    return [d for d in out if os.path.isdir(d)]


def cpu_usage_ns(dirs: list[str] | tuple[str, ...]) -> int:
    """CPU time consumed by the cgroup's processes since it was created (ns)."""
    for d in dirs:
        with contextlib.suppress(FileNotFoundError):
            with open(os.path.join(d, "cpuacct.usage")) as f:
                return int(f.read())
        with contextlib.suppress(FileNotFoundError):
            with open(os.path.join(d, "cpu.stat")) as f:
                for line in f:
                    key, value = line.split()
                    if key == "usage_usec":
                        return int(value) * 1000
    raise FileNotFoundError(f"no cpu accounting in {list(dirs)}")


def memory_bytes(dirs: list[str] | tuple[str, ...]) -> int:
    """Memory charged to the cgroup now (bytes)."""
    for d in dirs:
        for name in ("memory.usage_in_bytes", "memory.current"):
            with contextlib.suppress(FileNotFoundError):
                with open(os.path.join(d, name)) as f:
                    return int(f.read())
    raise FileNotFoundError(f"no memory accounting in {list(dirs)}")
