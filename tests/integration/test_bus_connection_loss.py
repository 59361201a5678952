"""The bus across a lost connection to a real nats-server (killed with SIGKILL, restarted on its
port, or its connection cut by a forwarder after a write landed): closing finishes and keeps the
caller's own error; a publish or KV write whose answer was lost with the connection is made again
at once, stored once, and a compare-and-set that had landed reports its own write; one-off reads
cut by the restart read again; followers resume right after the reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats.errors
import psutil
import pytest
from helpers.cutproxy import CutProxy

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, subjects

pytestmark = pytest.mark.integration


@dataclass
class Live:
    server: natsserver.EmbeddedServer
    bus: busmod.Bus
    folder: Path

    def kill(self) -> None:
        os.kill(self.server.process.pid, signal.SIGKILL)
        self.server.process.wait()

    def restart(self) -> None:
        self.server = natsserver.start(self.folder, port=self.server.port)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    server = natsserver.start(tmp_path / "nats")
    b = await busmod.connect(server.url, "test")
    live = Live(server, b, tmp_path / "nats")
    try:
        await b.ensure()
        yield live
    finally:
        with contextlib.suppress(Exception):
            await b.close()
        live.server.stop()


async def eventually(cond: Callable[[], bool], within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        assert time.monotonic() < deadline, f"not within {within_s} s"
        await asyncio.sleep(0.02)


def health(node: str) -> m.NodeHealth:
    return m.NodeHealth(node=node, at=time.time())


async def test_closing_a_dropped_connection_with_unsent_data_finishes_and_keeps_the_callers_error(live: Live) -> None:
    """nats-py flushed what was buffered during the outage into the dead socket when closing,
    raised ConnectionResetError and left its subscription tasks running; the service's own error
    was replaced by it."""
    outside = set(asyncio.all_tasks())
    heard: list[bytes] = []

    async def on_health(msg: object) -> None:
        heard.append(b"")

    await live.bus.listen(subjects.HEALTH, on_health)
    client_tasks = set(asyncio.all_tasks()) - outside - {asyncio.current_task()}
    live.kill()
    await eventually(lambda: not live.bus.nc.is_connected)
    await live.bus.signal(subjects.HEALTH, "chaos.health.n1", health("n1"))  # buffered until a reconnect

    with pytest.raises(RuntimeError, match="the service's own error"):
        try:
            raise RuntimeError("the service's own error")
        finally:
            await live.bus.close()

    assert live.bus.nc.is_closed
    assert client_tasks, "the client runs tasks (reader, flusher, the subscription's)"
    await eventually(lambda: all(t.done() for t in client_tasks), 5)


def event(name: str) -> m.ObjectEvent:
    return m.ObjectEvent(type="ADDED", kind="PodChaos", namespace="ns", name=name, uid=name)


async def publish_event(b: busmod.Bus, name: str) -> None:
    await b.publish(subjects.OBJECTS, subjects.object_subject("PodChaos", "ns", name), event(name), msg_id=name)


async def test_a_publish_sent_as_the_server_died_is_acknowledged_soon_after_its_restart(live: Live) -> None:
    """The kill and the restart block the event loop, so the client has not yet read the end of the
    old connection when the publish goes out: it is written into the dead socket, and nats-py
    waited out its whole 5 s for an ack that could never come."""
    await publish_event(live.bus, "a")
    live.kill()
    live.restart()
    restarted = time.monotonic()
    await asyncio.wait_for(publish_event(live.bus, "b"), 15)
    took = time.monotonic() - restarted
    print(f"publish acknowledged {took:.2f} s after the restart")
    assert took < 3.0
    info = await live.bus.js.stream_info(subjects.OBJECTS.name)
    assert info.state.messages == 2  # published again, stored once


# A one-off read of 20 MB: more than the socket buffers hold, so a kill once the reader has
# received a little cuts it (what was sent before the kill cannot complete it).
READ_SIZE = 10_000
PAD = b'{"pad":"' + b"x" * 2000 + b'"}'


async def store_many(b: busmod.Bus, subject_of: Callable[[int], str], payload: bytes) -> None:
    """READ_SIZE messages on as many subjects, as core publishes (JetStream stores them unacked)."""
    for i in range(READ_SIZE):
        await b.nc.publish(subject_of(i), payload)
    await b.nc.flush(timeout=30)


async def cut_by_a_restart(live: Live, read: Callable[[], Awaitable[list[object]]]) -> list[object]:
    """`read()` run while nats-server is killed once it has received part of its messages, then
    restarted: what it returns, and how long after the restart."""
    received = live.bus.nc.stats["in_msgs"]
    reading = asyncio.ensure_future(read())
    await eventually(lambda: live.bus.nc.stats["in_msgs"] > received + 200 or reading.done(), 15)
    assert not reading.done(), "the read ended before the kill: make READ_SIZE larger"
    live.kill()
    live.restart()
    restarted = time.monotonic()
    got = await asyncio.wait_for(reading, 30)
    took = time.monotonic() - restarted
    print(f"the read ended {took:.2f} s after the restart")
    assert live.bus.nc.stats["in_msgs"] - received > READ_SIZE  # read again from the start
    assert took < 9.0  # it did not wait out 10 s for a message that would never come
    return got


async def stored(b: busmod.Bus, stream: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while (await b.js.stream_info(stream)).state.messages < count:
        assert time.monotonic() < deadline, f"{stream} never held {count} messages"
        await asyncio.sleep(0.1)


async def test_last_messages_cut_by_a_server_restart_reads_again(live: Live) -> None:
    """Its consumer went with the server and nothing more came: the read failed after 10 s."""
    payload = busmod.encode(
        m.ObjectEvent(type="ADDED", kind="PodChaos", namespace="ns", name="x", uid="x", object=msgspec.Raw(PAD))
    )
    await store_many(live.bus, lambda i: subjects.object_subject("PodChaos", "ns", f"o{i}"), payload)
    await stored(live.bus, subjects.OBJECTS.name, READ_SIZE)

    async def read() -> list[object]:
        return list(await live.bus.last_messages(subjects.OBJECTS))

    assert len(await cut_by_a_restart(live, read)) == READ_SIZE


async def test_a_bucket_listing_cut_by_a_server_restart_reads_again(live: Live) -> None:
    bucket = await live.bus.bucket(subjects.OBJECT_STORE)
    await store_many(live.bus, lambda i: f"$KV.{bucket.name}.Pod.ns.p{i}", PAD)
    await stored(live.bus, f"KV_{bucket.name}", READ_SIZE)

    async def read() -> list[object]:
        return list(await bucket.list())

    listed = await cut_by_a_restart(live, read)
    assert len(listed) == READ_SIZE


async def test_followers_resume_right_after_the_reconnect(live: Live) -> None:
    """nats-py re-created a follower's consumer only once two 1 s heartbeats were missed: 2-4 s
    after the kill, whenever the server came back."""
    events: list[str] = []
    entries: list[str] = []
    snapshot = asyncio.Event()

    async def on_event(ev: m.ObjectEvent) -> None:
        events.append(ev.name)

    async def follow() -> None:
        async for e in live.bus.follow_kv(subjects.TARGETS.name):
            if e is None:
                snapshot.set()
            else:
                entries.append(e.key)

    tasks = [
        asyncio.ensure_future(live.bus.replay_and_follow(subjects.OBJECTS, on_event)),
        asyncio.ensure_future(follow()),
    ]
    try:
        await publish_event(live.bus, "a")
        await asyncio.wait_for(snapshot.wait(), 10)
        await eventually(lambda: events == ["a"], 10)
        live.kill()
        live.restart()
        restarted = time.monotonic()
        await publish_event(live.bus, "b")
        await (await live.bus.kv(subjects.TARGETS.name)).put("pod.ns.after", b"{}")
        await eventually(lambda: events == ["a", "b"] and entries == ["pod.ns.after"], 15)
        took = time.monotonic() - restarted
        print(f"followers resumed {took:.2f} s after the restart")
        assert took < 1.9
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_kv_put_sent_as_the_server_died_is_acknowledged_soon_after_its_restart(live: Live) -> None:
    targets = await live.bus.bucket(subjects.TARGETS)
    await targets.put("pod.ns.a", m.TargetPod(uid="a", namespace="ns", name="a", node="n1"))
    live.kill()
    live.restart()
    restarted = time.monotonic()
    pod = m.TargetPod(uid="b", namespace="ns", name="b", node="n1")
    await asyncio.wait_for(targets.put("pod.ns.b", pod), 15)
    took = time.monotonic() - restarted
    print(f"KV put acknowledged {took:.2f} s after the restart")
    assert took < 3.0
    assert await targets.get("pod.ns.b") == pod


@pytest.fixture
async def cut(nats_server: natsserver.EmbeddedServer) -> AsyncIterator[tuple[CutProxy, busmod.Bus]]:
    proxy = await CutProxy(nats_server.port).start()
    b = await busmod.connect(proxy.url, "test")
    try:
        await b.ensure()
        yield proxy, b
    finally:
        await b.close()
        await proxy.close()


async def test_a_compare_and_set_that_landed_before_its_answer_was_lost_reports_its_own_write(
    cut: tuple[CutProxy, busmod.Bus],
) -> None:
    """Made again on the next connection, it loses to itself: that is not someone else's write."""
    proxy, b = cut
    sched = await b.bucket(subjects.SCHEDULER)
    first = await sched.create(subjects.LEADER_KEY, m.LeaderLease(holder="a", renewed_at=time.time(), ttl_s=15.0))
    renewed = m.LeaderLease(holder="a", renewed_at=time.time() + 1, ttl_s=15.0)
    proxy.cut_after_next_write()
    started = time.monotonic()
    revision = await asyncio.wait_for(sched.update(subjects.LEADER_KEY, renewed, last=first), 15)
    assert proxy.cuts == 1
    assert time.monotonic() - started < 3.0  # not nats-py's 5 s wait for the lost answer
    stored = await sched.entry_of(subjects.LEADER_KEY)
    assert stored is not None and stored.value == renewed and stored.revision == revision == first + 1


async def test_a_publish_that_landed_before_its_ack_was_lost_is_stored_once(cut: tuple[CutProxy, busmod.Bus]) -> None:
    proxy, b = cut
    proxy.cut_after_next_write()
    started = time.monotonic()
    await asyncio.wait_for(publish_event(b, "a"), 15)
    assert proxy.cuts == 1
    assert time.monotonic() - started < 3.0
    assert (await b.js.stream_info(subjects.OBJECTS.name)).state.messages == 1


async def test_a_reader_set_up_as_the_server_died_is_bound_soon_after_its_restart(live: Live) -> None:
    """The set-up's first request went into the dead socket: it was asked again only after its
    own 5 s timeout."""
    bound = asyncio.Event()

    async def on_results(batch: list[m.ResultBatch]) -> set[int]:
        return set()

    live.kill()
    live.restart()
    restarted = time.monotonic()
    reader = asyncio.ensure_future(
        live.bus.consume_batches(subjects.RESULTS, on_results, durable="recorder", subscribed=bound.set)
    )
    try:
        await asyncio.wait_for(bound.wait(), 15)
        took = time.monotonic() - restarted
        print(f"reader bound {took:.2f} s after the restart")
        assert took < 3.0
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def test_a_flush_that_timed_out_leaves_a_connection_that_still_hears_answers(
    nats_server: natsserver.EmbeddedServer, bus: busmod.Bus
) -> None:
    """nats-py set the result of the timed-out flush's cancelled future when its PONG came; the
    error ended its reader, and every answer after it was lost until the pings found the
    connection stale, 15-20 s later."""
    nats_server.process.send_signal(signal.SIGSTOP)  # no PONG until it goes on
    try:
        await eventually(lambda: psutil.Process(nats_server.process.pid).status() == psutil.STATUS_STOPPED, 5)
        with pytest.raises(nats.errors.FlushTimeoutError):
            await bus.nc.flush(timeout=1)
    finally:
        nats_server.process.send_signal(signal.SIGCONT)
    info = await bus.nc.request("$JS.API.INFO", b"", timeout=5)
    assert b'"memory"' in info.data  # JetStream's account info: the reader is still there
