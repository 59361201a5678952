"""Followers across a nats-server restart: an ordered replay of a stream and a KV follow resume on
their own (short heartbeat), from where they were, so no service has to be restarted with NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats.errors
import pytest
from nats.js.kv import KeyValue

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, subjects

pytestmark = pytest.mark.integration
RESUME_WITHIN_S = 15.0  # ~2 s expected (two missed 1 s heartbeats, a retry backoff); margin for a loaded machine
OUTAGE_S = 5.0


def event(name: str) -> m.ObjectEvent:
    return m.ObjectEvent(type="ADDED", kind="PodChaos", namespace="ns", name=name, uid=name)


async def wait_for(cond: Callable[[], bool], within_s: float) -> None:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > within_s:
            raise AssertionError(f"not within {within_s} s")
        await asyncio.sleep(0.05)


async def publish_retrying(action: Callable[[], Awaitable[object]]) -> None:
    for _ in range(100):  # the client is reconnecting; JetStream may answer "no responders" meanwhile
        try:
            await action()
            return
        except Exception:
            await asyncio.sleep(0.1)
    raise AssertionError("publish never succeeded after the restart")


async def write_one_of_each_and_wait(
    b: busmod.Bus, kv: KeyValue, events: list[str], entries: list[str], results: list[str]
) -> None:
    """After the restart: one object event, one KV put and one result, each read exactly once."""
    await publish_retrying(
        lambda: b.publish(subjects.OBJECTS, subjects.object_subject("PodChaos", "ns", "b"), event("b"), msg_id="b")
    )
    await publish_retrying(lambda: kv.put("pod.ns.after", b"{}"))
    result = m.ResultBatch(
        kind="PodChaos", namespace="ns", name="b", experiment_uid="u", generation=1, command_id="c1", node="n1"
    )
    await publish_retrying(lambda: b.publish(subjects.RESULTS, subjects.result_subject("n1", "u"), result, msg_id="c1"))
    await wait_for(lambda: events == ["b"] and entries == ["pod.ns.after"] and results == ["c1"], RESUME_WITHIN_S)


async def test_followers_resume_after_a_server_restart_without_replaying_twice(tmp_path: Path) -> None:
    server = natsserver.start(tmp_path / "nats")
    b = await busmod.connect(server.url, "test")
    tasks: list[asyncio.Task[None]] = []
    try:
        await b.ensure()
        events: list[str] = []
        entries: list[tuple[str, bool]] = []
        snapshot = asyncio.Event()

        async def on_event(ev: m.ObjectEvent) -> None:
            events.append(ev.name)

        async def follow() -> None:
            async for e in b.follow_kv(subjects.TARGETS.name):
                if e is None:
                    snapshot.set()
                else:
                    entries.append((e.key, e.deleted))

        kv = await b.kv(subjects.TARGETS.name)
        await kv.put("pod.ns.before", b"{}")
        await b.publish(subjects.OBJECTS, subjects.object_subject("PodChaos", "ns", "a"), event("a"), msg_id="a")
        tasks = [
            asyncio.ensure_future(b.replay_and_follow(subjects.OBJECTS, on_event)),
            asyncio.ensure_future(follow()),
        ]
        await asyncio.wait_for(snapshot.wait(), 5)
        await wait_for(lambda: events == ["a"], 5)

        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        server = natsserver.start(tmp_path / "nats", port=server.port)
        restarted = time.monotonic()
        await publish_retrying(
            lambda: b.publish(subjects.OBJECTS, subjects.object_subject("PodChaos", "ns", "b"), event("b"), msg_id="b")
        )
        await publish_retrying(lambda: kv.delete("pod.ns.before"))
        await publish_retrying(lambda: kv.put("pod.ns.after", b"{}"))
        await wait_for(lambda: "b" in events and ("pod.ns.after", False) in entries, RESUME_WITHIN_S)
        print(f"followers resumed {time.monotonic() - restarted:.2f} s after the server restart")
        assert events == ["a", "b"]  # resumed from where it was: nothing replayed twice
        assert entries == [("pod.ns.before", False), ("pod.ns.before", True), ("pod.ns.after", False)]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await b.close()
        server.stop()


async def test_follow_kv_of_an_empty_bucket_reports_the_snapshot_at_once(bus: busmod.Bus) -> None:
    follower = bus.follow_kv(subjects.IPAM.name)
    assert await asyncio.wait_for(follower.__anext__(), 5) is None
    await (await bus.kv(subjects.IPAM.name)).put("10_0_0_1", b"ns/p")
    entry = await asyncio.wait_for(follower.__anext__(), 5)
    assert entry is not None and (entry.key, entry.value, entry.deleted) == ("10_0_0_1", b"ns/p", False)
    await follower.aclose()  # type: ignore[attr-defined]


async def test_last_messages_reads_the_last_event_per_subject_once(bus: busmod.Bus) -> None:
    assert await asyncio.wait_for(bus.last_messages(subjects.OBJECTS), 5) == []
    for i, name in enumerate(["a", "b", "a"]):
        ev = m.ObjectEvent(type="MODIFIED" if i == 2 else "ADDED", kind="PodChaos", namespace="ns", name=name, uid=name)
        await bus.publish(subjects.OBJECTS, subjects.object_subject("PodChaos", "ns", name), ev, msg_id=f"{name}{i}")
    last = await asyncio.wait_for(bus.last_messages(subjects.OBJECTS), 5)
    assert sorted((e.name, e.type) for e in last) == [("a", "MODIFIED"), ("b", "ADDED")]
    # A subject with no message, in a stream that has others (the recorder asking for the decision of
    # an experiment that never had one): nothing, at once, rather than a wait for a message that
    # never comes.
    none = await asyncio.wait_for(
        bus.last_messages(subjects.OBJECTS, subjects.object_subject("PodChaos", "ns", "c")), 5
    )
    assert none == []


async def test_readers_ride_out_the_jetstream_shutdown_of_a_lame_duck_restart(tmp_path: Path) -> None:
    """nats-server in lame duck mode (how a NATS pod is stopped) shuts JetStream down first and
    keeps its clients for the grace period: meanwhile a pull consumer's fetch is answered 503 and
    the followers' heartbeats stop. Every reader is still there, and reading, after the restart.
    """
    conf = tmp_path / "lame-duck.conf"
    conf.write_text('lame_duck_duration: "30s"\nlame_duck_grace_period: "2s"\n')  # 30 s: the server's minimum
    server = natsserver.start(tmp_path / "nats", config_file=conf)
    b = await busmod.connect(server.url, "test")
    tasks: list[asyncio.Task[None]] = []
    try:
        await b.ensure()
        events: list[str] = []
        entries: list[str] = []
        results: list[str] = []
        snapshot, bound = asyncio.Event(), asyncio.Event()

        async def on_event(ev: m.ObjectEvent) -> None:
            events.append(ev.name)

        async def on_results(batch: list[m.ResultBatch]) -> set[int]:
            results.extend(r.command_id for r in batch)
            return set()

        async def follow() -> None:
            async for e in b.follow_kv(subjects.TARGETS.name):
                if e is None:
                    snapshot.set()
                else:
                    entries.append(e.key)

        kv = await b.kv(subjects.TARGETS.name)
        tasks = [
            asyncio.ensure_future(b.replay_and_follow(subjects.OBJECTS, on_event)),
            asyncio.ensure_future(follow()),
            asyncio.ensure_future(
                b.consume_batches(subjects.RESULTS, on_results, durable="recorder", subscribed=bound.set)
            ),
        ]
        await asyncio.wait_for(asyncio.gather(snapshot.wait(), bound.wait()), 10)

        server.process.send_signal(signal.SIGUSR2)  # lame duck mode
        await asyncio.to_thread(server.process.wait, 60)
        assert all(not t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
        server = natsserver.start(tmp_path / "nats", port=server.port, config_file=conf)
        restarted = time.monotonic()
        await write_one_of_each_and_wait(b, kv, events, entries, results)
        print(f"readers resumed {time.monotonic() - restarted:.2f} s after the server restart")
        assert all(not t.done() for t in tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await b.close()
        server.stop()


async def test_a_follower_whose_handler_cannot_reach_nats_waits_for_it_and_skips_nothing(tmp_path: Path) -> None:
    """An ordered replay cannot nak: a handler that needs NATS (the scheduler writing a Schedule's
    status) and finds it gone is retried until NATS is back, not given up on after a few tries."""
    server = natsserver.start(tmp_path / "nats")
    b = await busmod.connect(server.url, "test")
    gate = asyncio.Event()
    entered: list[str] = []
    done: list[str] = []

    async def on_event(ev: m.ObjectEvent) -> None:
        entered.append(ev.name)
        await gate.wait()
        await b.nc.request("$JS.API.INFO", b"", timeout=0.5)  # JetStream must answer
        done.append(ev.name)

    await b.ensure()
    follower = asyncio.ensure_future(b.replay_and_follow(subjects.OBJECTS, on_event))
    try:
        await b.publish(subjects.OBJECTS, subjects.object_subject("PodChaos", "ns", "a"), event("a"), msg_id="a")
        await wait_for(lambda: "a" in entered, 5)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        gate.set()
        await asyncio.sleep(OUTAGE_S)  # longer than the few quick retries a handler bug gets
        server = natsserver.start(tmp_path / "nats", port=server.port)
        await publish_retrying(
            lambda: b.publish(subjects.OBJECTS, subjects.object_subject("PodChaos", "ns", "b"), event("b"), msg_id="b")
        )
        await wait_for(lambda: "b" in done, RESUME_WITHIN_S)
        assert done == ["a", "b"]
        assert not follower.done()
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        with contextlib.suppress(Exception):
            await b.close()
        server.stop()


async def test_readers_started_while_jetstream_is_down_wait_for_it(tmp_path: Path) -> None:
    """A reader set up while the client is connected but JetStream is not answering (a server in
    lame duck mode has shut it down) waits for JetStream instead of failing, then reads as usual."""
    conf = tmp_path / "lame-duck.conf"
    conf.write_text('lame_duck_duration: "30s"\nlame_duck_grace_period: "3s"\n')
    server = natsserver.start(tmp_path / "nats", config_file=conf)
    b = await busmod.connect(server.url, "test")
    tasks: list[asyncio.Task[None]] = []
    try:
        await b.ensure()
        kv = await b.kv(subjects.TARGETS.name)
        events: list[str] = []
        entries: list[str] = []
        results: list[str] = []

        async def on_event(ev: m.ObjectEvent) -> None:
            events.append(ev.name)

        async def on_results(batch: list[m.ResultBatch]) -> set[int]:
            results.extend(r.command_id for r in batch)
            return set()

        async def follow() -> None:
            async for e in b.follow_kv(subjects.TARGETS.name):
                if e is not None:
                    entries.append(e.key)

        server.process.send_signal(signal.SIGUSR2)  # lame duck mode: JetStream goes first

        async def jetstream_gone() -> None:
            for _ in range(100):
                try:
                    await b.nc.request("$JS.API.INFO", b"", timeout=0.5)
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("JetStream still answers in lame duck mode")

        await jetstream_gone()
        tasks = [
            asyncio.ensure_future(b.replay_and_follow(subjects.OBJECTS, on_event)),
            asyncio.ensure_future(follow()),
            asyncio.ensure_future(b.consume_batches(subjects.RESULTS, on_results, durable="recorder")),
        ]
        await asyncio.to_thread(server.process.wait, 60)
        assert all(not t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
        server = natsserver.start(tmp_path / "nats", port=server.port, config_file=conf)
        await write_one_of_each_and_wait(b, kv, events, entries, results)
        assert all(not t.done() for t in tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await b.close()
        server.stop()
