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
        # Per key, the work queued with `behind` and not started yet, and its completion.
        self._queued: dict[Hashable, tuple[list[Callable[[], Awaitable[None]]], asyncio.Future[None]]] = {}
        self._failure: asyncio.Future[None] | None = None
        self._running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

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

    def behind(self, key: Hashable, work: Callable[[], Awaitable[None]]) -> asyncio.Future[None]:
        """Queue `work` on `key`'s lane without waiting for it; its completion is returned. While
        it has not started, newer work queued on the same key replaces it (the newest wins), so an
        object whose lane is stuck keeps one work waiting, not one per change. An error it raises
        is also what `failed` raises."""
        queued = self._queued.get(key)
        if queued is not None:
            queued[0][0] = work
            return queued[1]
        slot: list[Callable[[], Awaitable[None]]] = [work]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued[key] = (slot, done)

        async def take() -> None:
            if self._queued.get(key, (None,))[0] is slot:
                del self._queued[key]
            await slot[0]()

        def settle(task: asyncio.Task[None]) -> None:
            if task.cancelled():
                done.cancel()
            elif (e := task.exception()) is not None:
                done.set_exception(e)
                done.exception()  # retrieved here: `failed` reports it, a waiter may be gone
                failure = self._failed()
                if not failure.done():
                    failure.set_exception(e)
            else:
                done.set_result(None)

        task = asyncio.ensure_future(self.run(key, take))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(settle)
        return done

    async def failed(self) -> None:
        """Return never; raise the first error of a work queued with `behind`."""
        await self._failed()

    def _failed(self) -> asyncio.Future[None]:
        if self._failure is None:
            self._failure = asyncio.get_running_loop().create_future()
        return self._failure

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
