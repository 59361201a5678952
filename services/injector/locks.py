"""Who may touch a fault's kernel state at a time, awaited in the event loop (never in a worker
thread, so a full thread pool can never deadlock on them).

`KeyLocks.hold(keys)`: one holder per journal entry (a command's apply and the watchdog's recover
of the same fault never interleave); keys are taken in sorted order, so two holders never wait on
each other. Every holder also shares the `Gate`, which the orphan sweeper takes exclusively while
it deletes, so no apply can be between its intent and its effect when the sweeper decides a kernel
object belongs to nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable


class Gate:
    """A readers-writer lock: many shared holders, or one exclusive holder (which waits for the
    shared ones to finish and keeps new ones out meanwhile).
    """

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            async with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            self._waiting += 1
            try:
                await self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            finally:
                self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            async with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class KeyLocks:
    def __init__(self) -> None:
        self.gate = Gate()
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        ordered = sorted(set(keys))
        async with self.gate.shared():
            taken: list[str] = []
            acquired: set[str] = set()
            try:
                for key in ordered:
                    self._users[key] = self._users.get(key, 0) + 1
                    taken.append(key)
                    await self._locks.setdefault(key, asyncio.Lock()).acquire()
                    acquired.add(key)
                yield
            finally:
                for key in reversed(taken):
                    if key in acquired:
                        self._locks[key].release()
                    self._users[key] -= 1
                    if not self._users[key]:
                        del self._users[key], self._locks[key]
