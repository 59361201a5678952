"""One lane per object for the recorder's writes: the work about one object runs in the order it
arrived, one at a time, and different objects' at once. An object whose writes wait (the API
answering its requests 5xx, say an admission webhook failing for it alone) holds up its own lane
only, never another object's. Pure asyncio: no NATS, no Kubernetes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Lanes:
    def __init__(self) -> None:
        # The last work queued on each busy key: done once it has run (or was given up), so the
        # next one on that key waits for it. A key with nothing queued has no entry.
        self._tails: dict[Hashable, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        """How many keys have work queued or running."""
        return len(self._tails)

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        """`work()`'s result, once everything queued on `key` before it has run. The place in the
        lane is taken when `run` is called, before its first await, so callers started in order
        run in order."""
        before = self._tails.get(key)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = mine
        try:
            if before is not None:
                await asyncio.shield(before)  # a cancelled waiter must not cancel the one it waits for
            return await work()
        finally:
            if before is not None and not before.done():
                # Cancelled while waiting: the next in the lane must still wait for `before`.
                before.add_done_callback(lambda _: self._leave(key, mine))
            else:
                self._leave(key, mine)

    def _leave(self, key: Hashable, mine: asyncio.Future[None]) -> None:
        if not mine.done():
            mine.set_result(None)
        if self._tails.get(key) is mine:
            del self._tails[key]


class Folded(Generic[T]):
    """Items about one object (result batches) written together: those that arrive while their
    object's lane is busy, a write waiting for the API included, become one write once it frees,
    so an outage's results cost one status write per object after it, not one each."""

    def __init__(self, lanes: Lanes, write: Callable[[list[T]], Awaitable[object]]) -> None:
        self.lanes, self.write = lanes, write
        self._waiting: dict[Hashable, list[tuple[T, asyncio.Future[None]]]] = {}

    async def add(self, key: Hashable, item: T) -> None:
        """Return once `item` has been written (with whatever else was waiting on `key`); raise
        what its write raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((item, done))
        await self.lanes.run(key, lambda: self._write_waiting(key))
        await done

    async def _write_waiting(self, key: Hashable) -> None:
        await asyncio.sleep(0)  # the rest of a fetch, started together, joins this write
        group = self._waiting.pop(key, [])
        if not group:
            return  # written by an earlier item's turn
        try:
            await self.write([item for item, _ in group])
        except asyncio.CancelledError:
            for _, done in group:
                done.cancel()
            raise
        except Exception as e:
            for _, done in group:
                done.set_exception(e)
            return
        for _, done in group:
            done.set_result(None)
