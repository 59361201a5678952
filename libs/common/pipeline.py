"""Work in flight together, in order per key: what a service decided for different experiments is
sent at once, one experiment's in the order it was decided. asyncio only, no I/O of its own.

A service that awaited every write before handling its next message spends a round trip per
message; handed to a `Pipeline`, the writes of a burst share their round trips while each key's
writes still leave one after another (a later batch for a key starts once the earlier one ended,
whether it succeeded or not: the later one carries the newer state).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection

from chaosbus.common import logging as cblog

log = cblog.get("pipeline")
DEFAULT_LIMIT = 64


class Pipeline:
    """Batches of work keyed by what they touch; at most `limit` unfinished at once for those who
    wait for `room()` before submitting (the intake), unbounded for work submitted from work.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT, *, name: str = "") -> None:
        self.limit, self.name = limit, name
        self._tails: dict[str, asyncio.Task[None]] = {}  # per key, its latest batch
        self._running: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._running)

    def submit(self, keys: Collection[str], work: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Start `work` once the batches submitted before it for any of `keys` have ended. The task
        fails as `work` does (logged here too, so nobody has to await it to learn of it).
        """
        before = {t for k in keys if (t := self._tails.get(k)) is not None and not t.done()}
        task = asyncio.ensure_future(self._after(before, work))
        for k in keys:
            self._tails[k] = task
        self._running.add(task)
        task.add_done_callback(lambda t: self._ended(t, keys))
        return task

    async def room(self) -> None:
        """Wait until fewer than `limit` batches are unfinished."""
        while len(self._running) >= self.limit:
            self._freed.clear()
            await self._freed.wait()

    async def drain(self) -> None:
        """Wait until every batch submitted so far (and any they submitted) has ended."""
        while self._running:
            await asyncio.wait(set(self._running))

    def cancel(self) -> None:
        """Stop everything unfinished (a leader that lost its lease sends nothing more)."""
        for t in list(self._running):
            t.cancel()

    async def _after(self, before: set[asyncio.Task[None]], work: Callable[[], Awaitable[None]]) -> None:
        if before:
            await asyncio.wait(before)  # their outcome is theirs: this batch carries newer state
        await work()

    def _ended(self, task: asyncio.Task[None], keys: Collection[str]) -> None:
        self._running.discard(task)
        for k in keys:
            if self._tails.get(k) is task:
                del self._tails[k]
        self._freed.set()
        if not task.cancelled() and (e := task.exception()) is not None:
            with contextlib.suppress(Exception):
                log.error("pipelined work failed", pipeline=self.name, keys=sorted(keys)[:5], error=repr(e)[:500])
