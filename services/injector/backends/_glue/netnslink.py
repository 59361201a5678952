"""One netlink socket per target network namespace, safe to use from any thread.

pyroute2 0.9 keeps its socket and event loop per *thread* (a sync `IPRoute` used from a second
thread quietly opens a second socket in that thread's namespace, and `IPRoute(netns=...)` forks
to create one). So each namespace gets one long-lived thread that entered it (setns, no fork) and
owns an `AsyncIPRoute` and its event loop there; callers hand it coroutine functions and wait.
The thread also serialises every change to that namespace's traffic control, which is the lock
the shaping fault needs.

A cached socket keeps its namespace alive, so once nothing of ours is left in a namespace its link
only lingers a little (`LINGER_S`, so an experiment recovered and re-applied right away does not pay
for a new thread and socket) and then closes itself; `LinkCache.forget_gone` drops at once the links
whose namespace went away.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pyroute2 import AsyncIPRoute

from chaosbus.common.netns import setns_net

R = TypeVar("R")
LINGER_S = 30.0
_WAKE: Any = ("wake", None)  # a queue item that only makes the thread re-read its deadline
Job = Callable[[Any], Awaitable[Any]]  # called with the namespace's AsyncIPRoute


class NetnsGone(Exception):
    """The network namespace does not exist (any more)."""


class LinkClosed(Exception):
    """The link's thread has ended (closed, or lingered out); open a new one."""


def netns_key(path: str) -> tuple[int, int]:
    """(device, inode) of a netns file: the namespace's identity.

    Raises:
        NetnsGone: the path does not exist.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise NetnsGone(f"network namespace {path} is gone") from e
    return (st.st_dev, st.st_ino)


class NetnsLink:
    """A thread inside one netns owning an AsyncIPRoute; `run` executes jobs there, in order."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.key = netns_key(path)
        self._jobs: queue.SimpleQueue[tuple[Job, concurrent.futures.Future[Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._deadline: float | None = None  # linger: the thread ends by itself after this
        self.closed = False
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), daemon=True, name=f"netlink:{os.path.basename(path)}"
        )
        self._thread.start()
        ready.result()

    def run(self, job: Callable[[Any], Awaitable[R]]) -> R:
        """Run `job(ipr)` on the namespace's thread and return its result (or raise its error).

        Raises:
            LinkClosed: the thread has ended.
        """
        done: concurrent.futures.Future[R] = concurrent.futures.Future()
        with self._lock:
            if self.closed:
                raise LinkClosed(f"netlink thread for {self.path} is closed")
            self._deadline = None
            self._jobs.put((job, done))
        return done.result()

    def linger(self, seconds: float) -> None:
        """End the thread after `seconds` without a job (a job in between keeps it)."""
        with self._lock:
            self._deadline = time.monotonic() + seconds
            self._jobs.put(_WAKE)  # the thread may be waiting without a timeout

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._jobs.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _next(self) -> tuple[Job, concurrent.futures.Future[Any]] | None:
        while True:
            with self._lock:
                deadline = self._deadline
            try:
                item = self._jobs.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
                if item is not _WAKE:
                    return item
            except queue.Empty:
                with self._lock:
                    if self._deadline is not None and time.monotonic() >= self._deadline and self._jobs.empty():
                        self.closed = True
                        return None

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            setns_net(self.path)
            loop = asyncio.new_event_loop()
            ipr = loop.run_until_complete(_open())
        except OSError as e:
            self.closed = True
            ready.set_exception(NetnsGone(f"cannot enter network namespace {self.path}: {e}"))
            return
        except BaseException as e:  # reported to the creator
            self.closed = True
            ready.set_exception(e)
            return
        ready.set_result(None)
        try:
            while (item := self._next()) is not None:
                job, done = item
                if done.set_running_or_notify_cancel():
                    try:
                        done.set_result(loop.run_until_complete(job(ipr)))
                    except BaseException as e:  # handed to the waiting caller
                        done.set_exception(e)
        finally:
            ipr.close()
            # one more turn lets the transport finish closing (else a ResourceWarning at GC time)
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()


async def _open() -> Any:
    ipr = AsyncIPRoute()
    await ipr.setup_endpoint()
    return ipr


class LinkCache:
    """NetnsLinks by namespace identity; thread-safe. `run` retries once on a link that lingered out."""

    def __init__(self, linger_s: float = LINGER_S) -> None:
        self.linger_s = linger_s
        self._lock = threading.Lock()
        self._links: dict[tuple[int, int], NetnsLink] = {}

    def get(self, path: str) -> NetnsLink:
        key = netns_key(path)
        with self._lock:
            link = self._links.get(key)
            if link is not None and not link.closed:
                return link
        fresh = NetnsLink(path)  # outside the lock: entering a namespace takes a moment
        with self._lock:
            link = self._links.get(key)
            if link is not None and not link.closed:
                fresh.close()
                return link
            self._links[key] = fresh
            return fresh

    def run(self, path: str, job: Callable[[Any], Awaitable[R]]) -> tuple[NetnsLink, R]:
        """Run `job` on the namespace's link; returns the link used and the result."""
        for attempt in (1, 2):
            link = self.get(path)
            try:
                return link, link.run(job)
            except LinkClosed:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def release(self, key: tuple[int, int]) -> None:
        """Nothing of ours is left in the namespace: let its link linger, then end."""
        with self._lock:
            link = self._links.get(key)
        if link is not None:
            if self.linger_s > 0:
                link.linger(self.linger_s)
            else:
                self.drop(key)

    def drop(self, key: tuple[int, int]) -> None:
        with self._lock:
            link = self._links.pop(key, None)
        if link is not None:
            link.close()

    def forget_gone(self) -> None:
        """Close links whose namespace file is gone or now names another namespace, and forget the
        ones that lingered out.
        """
        with self._lock:
            items = list(self._links.items())
        for key, link in items:
            try:
                alive = not link.closed and netns_key(link.path) == key
            except NetnsGone:
                alive = False
            if not alive:
                self.drop(key)

    def __len__(self) -> int:
        return len(self._links)

    def close_all(self) -> None:
        with self._lock:
            links, self._links = list(self._links.values()), {}
        for link in links:
            link.close()
