"""Bus against a real nats-server: streams and buckets declared from the subject table, idempotent
publish, and a pull consumer that acks handled messages, terminates poison ones without stopping,
redelivers when the handler fails, and runs detached (long) messages beside its loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from nats.js import api

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, service, subjects

pytestmark = pytest.mark.integration

DURABLE = "recorder"  # one of the results stream's durable consumers in the subject table


def decision(uid: str = "u1", phase: str = "Run") -> m.ExperimentDecision:
    return m.ExperimentDecision(
        experiment_uid=uid, generation=1, kind="PodChaos", namespace="ns", name="x", desired_phase=phase
    )  # type: ignore[arg-type]


def result_batch(command_id: str) -> m.ResultBatch:
    return m.ResultBatch(
        command_id=command_id,
        experiment_uid="u1",
        generation=1,
        kind="PodChaos",
        namespace="ns",
        name="x",
        node="n1",
        results=[m.TargetResult(target_id="ns/p", op="apply", ok=True)],
    )


# --- ensure --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", subjects.STREAMS, ids=[s.name for s in subjects.STREAMS])
async def test_ensure_declares_each_stream_from_the_table(bus: busmod.Bus, stream: subjects.Stream) -> None:
    info = await bus.js.stream_info(stream.name)
    cfg = info.config
    assert cfg.subjects == list(stream.subjects)
    assert cfg.retention == (api.RetentionPolicy.WORK_QUEUE if stream.work_queue else api.RetentionPolicy.LIMITS)
    assert cfg.max_msgs_per_subject == stream.max_msgs_per_subject
    assert (cfg.max_age or 0) == pytest.approx(stream.max_age_s)


@pytest.mark.parametrize("bucket", subjects.BUCKETS, ids=[b.name for b in subjects.BUCKETS])
async def test_ensure_declares_each_bucket(bus: busmod.Bus, bucket: subjects.Bucket) -> None:
    status = await (await bus.js.key_value(bucket.name)).status()
    assert status.bucket == bucket.name


async def test_ensure_is_idempotent_and_keeps_messages(bus: busmod.Bus) -> None:
    await bus.publish(subjects.DECISIONS, subjects.decision_subject("u1"), decision(), msg_id="d1")
    await bus.ensure()
    await bus.ensure()
    assert (await bus.js.stream_info(subjects.DECISIONS.name)).state.messages == 1


async def test_kv_handle_is_shared(bus: busmod.Bus) -> None:
    assert await bus.kv(subjects.TARGETS.name) is await bus.kv(subjects.TARGETS.name)


# --- publish -------------------------------------------------------------------------------------


async def test_same_msg_id_is_stored_once(bus: busmod.Bus) -> None:
    subject = subjects.result_subject("n1", "u1")
    await bus.publish(subjects.RESULTS, subject, result_batch("c1"), msg_id="same")
    await bus.publish(subjects.RESULTS, subject, result_batch("c1"), msg_id="same")
    assert (await bus.js.stream_info(subjects.RESULTS.name)).state.messages == 1


async def test_distinct_msg_ids_are_stored_separately(bus: busmod.Bus) -> None:
    subject = subjects.result_subject("n1", "u1")
    await bus.publish(subjects.RESULTS, subject, result_batch("c1"), msg_id="a")
    await bus.publish(subjects.RESULTS, subject, result_batch("c2"), msg_id="b")
    assert (await bus.js.stream_info(subjects.RESULTS.name)).state.messages == 2


async def test_published_payload_decodes_to_the_same_struct(bus: busmod.Bus) -> None:
    sent = result_batch("c1")
    await bus.publish(subjects.RESULTS, subjects.result_subject("n1", "u1"), sent, msg_id="a")
    raw = await bus.js.get_msg(subjects.RESULTS.name, seq=1)
    assert busmod.decode(raw.data or b"", m.ResultBatch) == sent


async def test_a_message_of_another_type_or_for_another_stream_is_refused_and_not_stored(bus: busmod.Bus) -> None:
    with pytest.raises(TypeError):
        await bus.publish(subjects.RESULTS, subjects.result_subject("n1", "u1"), decision(), msg_id="a")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await bus.publish(subjects.RESULTS, subjects.decision_subject("u1"), result_batch("c1"), msg_id="b")
    assert (await bus.js.stream_info(subjects.RESULTS.name)).state.messages == 0
    assert (await bus.js.stream_info(subjects.DECISIONS.name)).state.messages == 0


async def test_an_ordered_replay_decodes_its_streams_type(bus: busmod.Bus) -> None:
    await bus.publish(subjects.DECISIONS, subjects.decision_subject("u1"), decision(), msg_id="a")
    await bus.publish(subjects.DECISIONS, subjects.decision_subject("u2"), decision("u2"), msg_id="b")
    got: list[m.ExperimentDecision] = []

    async def handler(d: m.ExperimentDecision) -> None:
        got.append(d)

    task = asyncio.ensure_future(bus.replay_and_follow(subjects.DECISIONS, handler))
    try:
        await wait_for(lambda: len(got) == 2, within=30)
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=5)
    assert got == [decision(), decision("u2")]
    assert await bus.last_messages(subjects.DECISIONS, subjects.decision_subject("u2")) == [decision("u2")]


async def test_last_value_stream_keeps_one_message_per_subject(bus: busmod.Bus) -> None:
    await bus.publish(subjects.DECISIONS, subjects.decision_subject("u1"), decision(phase="Run"), msg_id="1")
    await bus.publish(subjects.DECISIONS, subjects.decision_subject("u1"), decision(phase="Stop"), msg_id="2")
    await bus.publish(subjects.DECISIONS, subjects.decision_subject("u2"), decision(uid="u2"), msg_id="3")
    assert (await bus.js.stream_info(subjects.DECISIONS.name)).state.messages == 2


# --- consume -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def consuming(
    bus: busmod.Bus,
    handler: Callable[[Any], Awaitable[None]],
    *,
    ack_wait: float = 5.0,
    detach: Callable[[Any], bool] | None = None,
) -> AsyncIterator[None]:
    task = asyncio.create_task(
        bus.consume(subjects.RESULTS, handler, durable=DURABLE, ack_wait=ack_wait, detach=detach)
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_for(predicate: Callable[[], bool], within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not reached within {within}s")


async def settled(bus: busmod.Bus, within: float = 20.0) -> api.ConsumerInfo:
    """The consumer's info once nothing is pending or awaiting an ack (or at the deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        info = await bus.js.consumer_info(subjects.RESULTS.name, DURABLE)
        if (info.num_pending, info.num_ack_pending) == (0, 0) or loop.time() > deadline:
            return info
        await asyncio.sleep(0.02)


async def test_consume_hands_decoded_structs_to_the_handler_and_acks(bus: busmod.Bus) -> None:
    got: list[m.ResultBatch] = []

    async def handler(msg: m.ResultBatch) -> None:
        got.append(msg)

    async with consuming(bus, handler):
        for i in range(3):
            await bus.publish(
                subjects.RESULTS, subjects.result_subject("n1", "u1"), result_batch(f"c{i}"), msg_id=f"c{i}"
            )
        await wait_for(lambda: len(got) == 3)
        info = await settled(bus)
    assert [b.command_id for b in got] == ["c0", "c1", "c2"]
    assert all(isinstance(b, m.ResultBatch) for b in got)
    assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"foo": 1}',
        b"[]",
        msgspec.json.encode(
            {
                "command_id": "c",
                "experiment_uid": "u",
                "generation": "one",
                "kind": "k",
                "namespace": "n",
                "name": "x",
                "node": "n1",
            }
        ),
    ],
    ids=["not-json", "wrong-shape", "array", "wrong-field-type"],
)
async def test_malformed_message_is_terminated_and_the_consumer_goes_on(bus: busmod.Bus, payload: bytes) -> None:
    got: list[str] = []

    async def handler(msg: m.ResultBatch) -> None:
        got.append(msg.command_id)

    async with consuming(bus, handler):
        await bus.js.publish(subjects.result_subject("n1", "u1"), payload)
        await bus.publish(subjects.RESULTS, subjects.result_subject("n1", "u1"), result_batch("good"), msg_id="good")
        await wait_for(lambda: got == ["good"])
        info = await settled(bus)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
    assert info.delivered.consumer_seq == 2  # the poison message was delivered once, never again


async def test_handler_exception_leads_to_redelivery(bus: busmod.Bus) -> None:
    calls: list[str] = []

    async def flaky(msg: m.ResultBatch) -> None:
        calls.append(msg.command_id)
        if len(calls) == 1:
            raise RuntimeError("transient")

    async with consuming(bus, flaky):
        await bus.publish(subjects.RESULTS, subjects.result_subject("n1", "u1"), result_batch("c1"), msg_id="c1")
        await wait_for(lambda: len(calls) == 2)
        info = await settled(bus)
    assert calls == ["c1", "c1"]
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_handler_failure_does_not_block_other_messages(bus: busmod.Bus) -> None:
    calls: list[str] = []

    async def picky(msg: m.ResultBatch) -> None:
        calls.append(msg.command_id)
        if msg.command_id == "bad" and calls.count("bad") == 1:
            raise RuntimeError("transient")

    async with consuming(bus, picky):
        await bus.publish(subjects.RESULTS, subjects.result_subject("n1", "u1"), result_batch("bad"), msg_id="bad")
        await bus.publish(subjects.RESULTS, subjects.result_subject("n1", "u1"), result_batch("good"), msg_id="good")
        await wait_for(lambda: calls.count("bad") == 2)
    assert calls.index("good") < len(calls) - 1  # handled before the failed one came back


async def test_durable_consumer_resumes_after_a_restart(bus: busmod.Bus, nats_server: Any) -> None:
    """A service that restarts (new connection, same durable) gets only what it has not acked.

    The old connection's last pull request may still be pending on the server and take the next
    message, which then comes back after ack_wait: a short ack_wait keeps that wait short here.
    """
    got: list[str] = []

    async def handler(msg: m.ResultBatch) -> None:
        got.append(msg.command_id)

    for command_id in ("c1", "c2"):
        await bus.publish(
            subjects.RESULTS, subjects.result_subject("n1", "u1"), result_batch(command_id), msg_id=command_id
        )
        other = await busmod.connect(nats_server.url, f"restart-{command_id}")
        try:
            async with consuming(other, handler, ack_wait=1.0):
                await wait_for(lambda cid=command_id: got[-1:] == [cid])  # type: ignore[misc]
                await settled(other)
        finally:
            await other.close()
    assert got == ["c1", "c2"]


async def test_cancel_stops_the_consumer_even_when_a_message_arrives_with_it(bus: busmod.Bus) -> None:
    """nats-py's fetch can swallow a cancel on Python 3.11 (wait_for race); consume must still stop,
    or a service never finishes shutting down. The race is hit in about 1 of 10 attempts.
    """

    async def handler(msg: m.ResultBatch) -> None:
        pass

    rng = random.Random(3)
    for attempt in range(40):
        task = asyncio.create_task(
            bus.consume(
                subjects.RESULTS, handler, durable=f"cancel-{attempt}", filter_subject=subjects.RESULTS.subjects[0]
            )
        )
        await asyncio.sleep(0.02)  # the consumer is set up and its fetch is waiting
        await bus.publish(
            subjects.RESULTS, subjects.result_subject("n1", "u1"), result_batch(f"c{attempt}"), msg_id=f"c{attempt}"
        )
        await asyncio.sleep(rng.uniform(0, 0.003))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if not done:
            while not task.done():  # do not leak the task into the next test
                task.cancel()
                await asyncio.wait({task}, timeout=0.2)
            pytest.fail(f"consume ignored its cancellation (attempt {attempt})")
        assert task.cancelled()


async def test_a_detached_message_runs_beside_the_loop_past_ack_wait_without_redelivery(bus: busmod.Bus) -> None:
    calls: list[str] = []
    finished: list[str] = []

    async def handler(msg: m.ResultBatch) -> None:
        calls.append(msg.command_id)
        if msg.command_id.startswith("long"):
            await asyncio.sleep(3.0)  # three times the ack wait: kept in progress meanwhile
        finished.append(msg.command_id)

    async with consuming(bus, handler, ack_wait=1.0, detach=lambda b: b.command_id.startswith("long")):
        await bus.publish(
            subjects.RESULTS, subjects.result_subject("n1", "u1"), result_batch("long-1"), msg_id="long-1"
        )
        await wait_for(lambda: calls == ["long-1"])
        await bus.publish(subjects.RESULTS, subjects.result_subject("n1", "u1"), result_batch("quick"), msg_id="quick")
        await wait_for(lambda: finished == ["quick"], within=2.0)  # not held up behind the long one
        await wait_for(lambda: finished == ["quick", "long-1"], within=10.0)
        info = await settled(bus)
    assert calls == ["long-1", "quick"], "the long message was redelivered while it ran"
    assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)


async def test_consume_batches_hands_a_fetch_at_once_and_redelivers_only_what_it_asks(bus: busmod.Bus) -> None:
    for i in range(4):
        await bus.publish(subjects.RESULTS, subjects.result_subject("n1", "u1"), result_batch(f"c{i}"), msg_id=f"c{i}")
    await bus.js.publish(subjects.result_subject("n1", "u1"), b"not json")
    fetches: list[list[str]] = []

    async def handler(batches: list[m.ResultBatch]) -> set[int]:
        fetches.append([b.command_id for b in batches])
        return {i for i, b in enumerate(batches) if b.command_id == "c2" and len(fetches) == 1}

    task = asyncio.create_task(bus.consume_batches(subjects.RESULTS, handler, durable=DURABLE, ack_wait=5.0))
    try:
        await wait_for(lambda: len(fetches) == 2)
        info = await settled(bus)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert fetches == [["c0", "c1", "c2", "c3"], ["c2"]]  # the malformed one was terminated, not handed over
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_consume_batches_redelivers_the_whole_fetch_when_the_handler_fails(bus: busmod.Bus) -> None:
    for i in range(2):
        await bus.publish(subjects.RESULTS, subjects.result_subject("n1", "u1"), result_batch(f"c{i}"), msg_id=f"c{i}")
    fetches: list[list[str]] = []

    async def handler(batches: list[m.ResultBatch]) -> set[int]:
        fetches.append([b.command_id for b in batches])
        if len(fetches) == 1:
            raise RuntimeError("transient")
        return set()

    task = asyncio.create_task(bus.consume_batches(subjects.RESULTS, handler, durable=DURABLE, ack_wait=5.0))
    try:
        await wait_for(lambda: sum(map(len, fetches)) == 4)
        info = await settled(bus)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert sorted(c for f in fetches for c in f) == ["c0", "c0", "c1", "c1"]
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_hold_lasts_while_the_connection_lives_and_ends_when_it_is_closed_for_good(
    nats_server: natsserver.EmbeddedServer,
) -> None:
    # A service whose work is all in callbacks (the auth service) waits in hold(): it must end, so
    # that the process is restarted, once nats-py has given the connection up.
    b = await busmod.connect(nats_server.url, "holder")
    holding = asyncio.ensure_future(service.hold(b, interval=0.05))
    await asyncio.sleep(0.3)
    assert not holding.done()
    await b.nc.close()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(holding, 10)
