"""One lane per object: work on one object in the order it arrived, one at a time; another
object's meanwhile; items arriving while an object's lane is busy written together once it frees."""

from __future__ import annotations

import asyncio

import pytest

from chaosbus.recorder.lanes import Folded, Lanes


async def test_one_object_in_order_another_meanwhile() -> None:
    lanes, done = Lanes(), []
    held = asyncio.Event()

    async def work(name: str, wait: asyncio.Event | None = None) -> str:
        if wait is not None:
            await wait.wait()
        done.append(name)
        return name

    first = asyncio.ensure_future(lanes.run("a", lambda: work("a1", held)))
    second = asyncio.ensure_future(lanes.run("a", lambda: work("a2")))
    other = asyncio.ensure_future(lanes.run("b", lambda: work("b1")))
    assert await other == "b1" and done == ["b1"]  # "a" is held; "b" is not behind it
    assert not second.done()
    held.set()
    assert await asyncio.gather(first, second) == ["a1", "a2"]
    assert done == ["b1", "a1", "a2"] and len(lanes) == 0


async def test_a_cancelled_waiter_keeps_the_order_of_those_behind_it() -> None:
    lanes, done = Lanes(), []
    held = asyncio.Event()

    async def work(name: str) -> None:
        if name == "1":
            await held.wait()
        done.append(name)

    first = asyncio.ensure_future(lanes.run("k", lambda: work("1")))
    second = asyncio.ensure_future(lanes.run("k", lambda: work("2")))
    third = asyncio.ensure_future(lanes.run("k", lambda: work("3")))
    await asyncio.sleep(0)
    second.cancel()
    await asyncio.sleep(0.01)
    assert done == []  # the third still waits for the first
    held.set()
    await asyncio.gather(first, third)
    assert done == ["1", "3"] and len(lanes) == 0


async def test_items_waiting_behind_a_busy_lane_are_written_together() -> None:
    lanes, writes = Lanes(), []
    held = asyncio.Event()

    async def write(items: list[str]) -> None:
        if not writes:
            await held.wait()
        writes.append(items)

    folded: Folded[str] = Folded(lanes, write)
    adds = [asyncio.ensure_future(folded.add("x", i)) for i in ("1", "2")]  # one fetch: one write
    await asyncio.sleep(0.01)
    adds += [asyncio.ensure_future(folded.add("x", i)) for i in ("3", "4", "5")]  # while it waits
    await asyncio.sleep(0.01)
    held.set()
    await asyncio.gather(*adds)
    assert writes == [["1", "2"], ["3", "4", "5"]]


async def test_a_failed_write_is_raised_to_every_item_in_it() -> None:
    async def write(items: list[str]) -> None:
        raise OSError("refused")

    folded: Folded[str] = Folded(Lanes(), write)
    got = await asyncio.gather(folded.add("x", "1"), folded.add("x", "2"), return_exceptions=True)
    assert [type(e) for e in got] == [OSError, OSError]
    with pytest.raises(OSError):
        await folded.add("x", "3")


async def test_work_queued_behind_a_busy_lane_keeps_only_the_newest() -> None:
    lanes, done = Lanes(), []
    held = asyncio.Event()

    async def work(name: str) -> None:
        if name == "1":
            await held.wait()
        done.append(name)

    first = lanes.behind("k", lambda: work("1"))
    await asyncio.sleep(0)  # started: held
    queued = [lanes.behind("k", lambda n=n: work(n)) for n in ("2", "3", "4")]
    assert queued[0] is queued[1] is queued[2]  # one place in the lane, the newest work in it
    held.set()
    await asyncio.gather(first, queued[0])
    assert done == ["1", "4"]


async def test_an_error_of_work_behind_is_raised_by_failed() -> None:
    lanes = Lanes()
    watching = asyncio.ensure_future(lanes.failed())

    async def broken() -> None:
        raise ConnectionError("NATS away for too long")

    done = lanes.behind("k", broken)
    with pytest.raises(ConnectionError):
        await done
    with pytest.raises(ConnectionError):
        await watching
