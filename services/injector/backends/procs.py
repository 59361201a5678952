"""Process backend: signal process trees through psutil, and run a program inside a target
(native/nsexec; the faults reach the native helpers through here).

The only module of the injector that touches processes. Zombies count as dead: a killed process
whose parent has not reaped it yet can do no more harm, and waiting for a foreign parent to reap
would hang.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

import psutil

from chaosbus.injector.backends._glue import native

KILL_WAIT_S = 2.0
# The marks a fault's helper process carries in its environment (the injector's node name and the
# journal entry's key): recovery finds its helpers by the key, the orphan sweeper by the node.
NODE_ENV, KEY_ENV = "CHAOSBUS_FAULT_NODE", "CHAOSBUS_FAULT_KEY"


# What a fault runs inside a target (native/nsexec) reaches it through here, not the helpers' glue.
run_in_target = native.run_in_target
ns_pid = native.ns_pid


def helper_env(node: str, key: str) -> dict[str, str]:
    """The environment marks a fault's helper process must carry (so the sweeper knows it)."""
    return {NODE_ENV: node, KEY_ENV: key}


class NetnsProcesses:
    """The processes of each network namespace, and their mount tables. Within `shared` (a sweep)
    the processes come from one /proc scan, made at the first question, and each mount namespace's
    table is read once: a sweep that visits 1,000 namespaces scans /proc once, not 1,000 times, and
    reads the host's mount table once however many of them hold processes in it (process pods
    without a volume). Outside, every question reads afresh.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_netns: dict[int, list[int]] | None = None
        self._mounts: dict[int, list[str]] = {}
        self._sharing = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """While inside, `pids_in` answers from one scan; the scan is dropped when the last sharer
        leaves (the next sweep sees the processes started meanwhile)."""
        with self._lock:
            self._sharing += 1
        try:
            yield
        finally:
            with self._lock:
                self._sharing -= 1
                if not self._sharing:
                    self._by_netns, self._mounts = None, {}

    def pids_in(self, inode: int) -> list[int]:
        """The pids whose network namespace has this inode."""
        with self._lock:
            if self._sharing and self._by_netns is not None:
                return list(self._by_netns.get(inode, []))
        by_netns = _scan_netns()
        with self._lock:
            if self._sharing and self._by_netns is None:
                self._by_netns = by_netns
        return list(by_netns.get(inode, []))

    def mount_table(self, pid: int) -> tuple[int, list[str]]:
        """The inode of `pid`'s mount namespace and that namespace's /proc/<pid>/mountinfo lines.

        Raises:
            OSError: the process is gone.
        """
        mnt = os.stat(f"/proc/{int(pid)}/ns/mnt").st_ino
        with self._lock:
            lines = self._mounts.get(mnt) if self._sharing else None
        if lines is None:
            with open(f"/proc/{int(pid)}/mountinfo") as f:
                lines = f.read().splitlines()
            with self._lock:
                if self._sharing:
                    self._mounts[mnt] = lines
        return mnt, list(lines)


def _scan_netns() -> dict[int, list[int]]:
    by_netns: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                by_netns.setdefault(os.stat(f"/proc/{entry.name}/ns/net").st_ino, []).append(int(entry.name))
            except OSError:
                continue  # exited meanwhile, or a kernel thread
    return by_netns


def process_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # only ever raised for a process that exists
        return True


def kill_tree(pid: int, sig: int = signal.SIGKILL, wait_s: float = KILL_WAIT_S) -> int:
    """Send `sig` to `pid` and all its descendants; wait (SIGKILL only) until they are dead.

    The injector itself and its ancestors are never signalled, even if they are in the tree.

    Returns:
        How many live processes were signalled; 0 if `pid` is already gone.

    Raises:
        ValueError: `pid` is 1 (init), not positive, or the injector itself.
    """
    if pid <= 1 or pid == os.getpid():
        raise ValueError(f"refusing to kill pid {pid}")
    try:
        root = psutil.Process(pid)
        # Collected before the first signal: once the parent dies its children are reparented.
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    protected = _self_and_ancestors()
    signalled = [p for p in tree if p.pid not in protected and _signal(p, sig)]
    if sig == signal.SIGKILL:
        _wait_dead(signalled, wait_s)
    return len(signalled)


def _signal(proc: psutil.Process, sig: int) -> bool:
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        proc.send_signal(sig)
        return True
    except psutil.NoSuchProcess:
        return False


def _self_and_ancestors() -> set[int]:
    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.parents())}


def _wait_dead(procs: list[psutil.Process], wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    pending = list(procs)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if _still_running(p)]
        if pending:
            time.sleep(0.005)


def _still_running(proc: psutil.Process) -> bool:
    try:
        # is_running() also guards against pid reuse (it compares create times).
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
