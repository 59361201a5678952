"""The pipeline the scheduler sends its effects through: one key's batches one after another in the
order submitted, different keys' at once, a failed batch not holding back the next of its key, the
intake bounded, and nothing left running once cancelled. Real asyncio, no timing: each batch
waits on an event the test sets.
"""

from __future__ import annotations

import asyncio

import pytest

from chaosbus.common.pipeline import Pipeline


class Batch:
    """A batch that records when it starts and waits for the test to let it end (or fail)."""

    def __init__(self, name: str, log: list[str], *, fails: bool = False) -> None:
        self.name, self.log, self.fails = name, log, fails
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> None:
        self.log.append(f"start {self.name}")
        self.started.set()
        await self.release.wait()
        self.log.append(f"end {self.name}")
        if self.fails:
            raise RuntimeError(f"{self.name} failed")


async def settle() -> None:
    for _ in range(5):  # let every ready task take its next step
        await asyncio.sleep(0)


async def test_one_keys_batches_run_one_after_another_in_the_order_submitted() -> None:
    log: list[str] = []
    p = Pipeline()
    first, second, third = Batch("1", log), Batch("2", log), Batch("3", log)
    tasks = [p.submit({"exp-a"}, first), p.submit({"exp-a"}, second), p.submit({"exp-a"}, third)]
    await settle()
    assert log == ["start 1"]  # the others wait for it
    first.release.set()
    second.release.set()  # released early: it still starts only after the first ended
    third.release.set()
    await asyncio.gather(*tasks)
    assert log == ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]


async def test_different_keys_are_in_flight_together() -> None:
    log: list[str] = []
    p = Pipeline()
    batches = [Batch(str(i), log) for i in range(20)]
    tasks = [p.submit({f"exp-{i}"}, b) for i, b in enumerate(batches)]
    await asyncio.wait_for(asyncio.gather(*(b.started.wait() for b in batches)), 10)
    assert len(p) == 20 and not any(t.done() for t in tasks)  # all started, none waited for another
    for b in batches:
        b.release.set()
    await asyncio.gather(*tasks)
    assert len(p) == 0


async def test_a_batch_over_several_keys_waits_for_each_of_them() -> None:
    log: list[str] = []
    p = Pipeline()
    a, b, both = Batch("a", log), Batch("b", log), Batch("both", log)
    ta, tb = p.submit({"exp-a"}, a), p.submit({"exp-b"}, b)
    tboth = p.submit({"exp-a", "exp-b"}, both)
    a.release.set()
    await ta
    await settle()
    assert not both.started.is_set()  # exp-b's batch is still running
    b.release.set()
    both.release.set()
    await asyncio.gather(tb, tboth)
    assert log.index("start both") > max(log.index("end a"), log.index("end b"))


async def test_a_failed_batch_fails_its_task_and_the_next_of_its_key_still_runs() -> None:
    log: list[str] = []
    p = Pipeline()
    bad, after = Batch("bad", log, fails=True), Batch("after", log)
    t1, t2 = p.submit({"exp-a"}, bad), p.submit({"exp-a"}, after)
    bad.release.set()
    after.release.set()
    with pytest.raises(RuntimeError, match="bad failed"):
        await t1
    await t2
    assert log == ["start bad", "end bad", "start after", "end after"]


async def test_room_waits_while_the_limit_is_reached() -> None:
    log: list[str] = []
    p = Pipeline(limit=2)
    first, second = Batch("1", log), Batch("2", log)
    p.submit({"exp-1"}, first)
    p.submit({"exp-2"}, second)
    waiting = asyncio.ensure_future(p.room())
    await settle()
    assert not waiting.done()
    first.release.set()
    await asyncio.wait_for(waiting, 10)  # one ended: room for the next
    second.release.set()
    await asyncio.wait_for(p.drain(), 10)


async def test_cancel_stops_every_unfinished_batch() -> None:
    log: list[str] = []
    p = Pipeline()
    running, queued = Batch("running", log), Batch("queued", log)
    tasks = [p.submit({"exp-a"}, running), p.submit({"exp-a"}, queued)]
    await running.started.wait()
    p.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert all(t.cancelled() for t in tasks)
    assert log == ["start running"] and len(p) == 0
