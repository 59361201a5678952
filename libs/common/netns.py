"""Network-namespace primitives shared by the CLI (process pods) and the injector.

Python 3.11 has no `os.setns`, so `setns_net` calls libc through ctypes. Namespaces belong to a
thread, not to a process: `run_in_netns` runs a function on a fresh thread that enters the
namespace and then dies, so no other code ever runs in the wrong namespace and nothing forks
(pyroute2's own netns support forks the whole, possibly multi-threaded, interpreter).
`visit_netns` does the same on a few long-lived visitor threads that run nothing but such visits
(enter, call, return to the process's netns): starting a thread per call cost 0.2-3 ms on a busy
machine, a visit about 0.13 ms (measured), and the injector makes one per new target netns.
Everything here is sync and free of netlink.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

NETNS_RUN_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
_MS_BIND, _MS_REC, _MS_SHARED, _MNT_DETACH = 0x1000, 0x4000, 1 << 20, 2

P = ParamSpec("P")
R = TypeVar("R")

_libc: ctypes.CDLL | None = None


def _get_libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def _check(rc: int, what: str, target: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what} failed: {os.strerror(err)}", target)


def setns_net(target: str | int) -> None:
    """Move the calling thread into the network namespace `target` (a path or an open fd).

    Raises:
        OSError: the path cannot be opened or the kernel refused the switch.
    """
    libc = _get_libc()
    fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC) if isinstance(target, str) else target
    try:
        _check(libc.setns(fd, CLONE_NEWNET), "setns(CLONE_NEWNET)", str(target))
    finally:
        if isinstance(target, str):
            os.close(fd)


def netns_path(name: str) -> str:
    """Path of the named network namespace `name` (as `ip netns add` would create it)."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid netns name {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


def netns_inode(path: str) -> int:
    """Inode of a netns file: the namespace's identity (same inode = same namespace).

    Raises:
        FileNotFoundError: the namespace (or the process holding it) is gone.
    """
    return os.stat(path).st_ino


def run_in_netns(path: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call `fn` on a short-lived thread inside the netns at `path`; return or raise its outcome.

    Sockets created by `fn` stay in that namespace after the thread is gone.
    """

    def inside() -> R:
        setns_net(path)
        return fn(*args, **kwargs)

    return _on_thread(inside)


_VISITORS = 4
_visitors: ThreadPoolExecutor | None = None
_home_fd: int | None = None
_visitors_lock = threading.Lock()


def visit_netns(path: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Like `run_in_netns`, on a visitor thread that goes back to the process's netns afterwards
    (so it holds no namespace alive). Every visit enters its own target first, so a visitor that
    failed to go back can never run anything in the wrong namespace.
    """
    pool, home = _visitor_pool()

    def inside() -> R:
        setns_net(path)
        try:
            return fn(*args, **kwargs)
        finally:
            setns_net(home)

    return pool.submit(inside).result()


def start_visitors(within_s: float = 5.0) -> None:
    """Start every visitor thread now (a node injector's start), so that no visit waits for one to
    be started; best effort: visits still run, and start threads, if this gives up after `within_s`.
    """
    pool, _ = _visitor_pool()
    # Each job holds its thread until all are held, so each lands on a thread of its own.
    together = threading.Barrier(_VISITORS)

    def hold() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait(within_s)

    for job in [pool.submit(hold) for _ in range(_VISITORS)]:
        job.result()


def _visitor_pool() -> tuple[ThreadPoolExecutor, int]:
    global _visitors, _home_fd
    with _visitors_lock:
        if _visitors is None:
            _home_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            _visitors = ThreadPoolExecutor(_VISITORS, thread_name_prefix="netns-visit")
        assert _home_fd is not None
        return _visitors, _home_fd


def create_named_netns(name: str) -> str:
    """Create the named netns `name` (like `ip netns add`), without forking. Returns its path.

    Raises:
        FileExistsError: it already exists.
    """
    path = netns_path(name)
    _share_run_dir()
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    try:
        _on_thread(lambda: _unshare_and_bind(path))
    except BaseException:
        os.unlink(path)
        raise
    return path


def remove_named_netns(name: str) -> bool:
    """Unmount and unlink the named netns `name`; False if it did not exist."""
    path = netns_path(name)
    if not os.path.exists(path):
        return False
    # EINVAL: not a mount point (a half-made entry); unlinking it is all that is left to do.
    if _get_libc().umount2(path.encode(), _MNT_DETACH) != 0 and ctypes.get_errno() != errno.EINVAL:
        _check(-1, "umount2", path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _on_thread(fn: Callable[[], R]) -> R:
    outcome: list[R] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            outcome.append(fn())
        except BaseException as e:  # re-raised in the caller's thread
            failure.append(e)

    worker = threading.Thread(target=body, name="netns-worker", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _unshare_and_bind(path: str) -> None:
    libc = _get_libc()
    _check(libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)", path)
    # thread-self, not self: only this thread is in the new namespace.
    source = b"/proc/thread-self/ns/net"
    _check(libc.mount(source, path.encode(), b"none", _MS_BIND, None), "bind mount", path)


def _share_run_dir() -> None:
    # As iproute2 does: make the run dir a shared mount so netns mounts propagate to other
    # mount namespaces (containers, `ip netns exec`).
    os.makedirs(NETNS_RUN_DIR, exist_ok=True)
    libc, run_dir = _get_libc(), NETNS_RUN_DIR.encode()
    if libc.mount(b"", run_dir, b"none", _MS_SHARED | _MS_REC, None) == 0:
        return
    _check(libc.mount(run_dir, run_dir, b"none", _MS_BIND | _MS_REC, None), "bind run dir", NETNS_RUN_DIR)
    _check(libc.mount(b"", run_dir, b"none", _MS_SHARED | _MS_REC, None), "share run dir", NETNS_RUN_DIR)
