"""Typed NATS access over the subject table: connect, declare, publish, consume. The services' only
path to nats-py for JetStream; payloads are always msgspec Structs from `messages`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from chaosbus.common import logging as cblog
from chaosbus.common.tcpnats import check_url, open_client, tcp_only

with tcp_only():
    import nats
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js import JetStreamContext, api
    from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError
    from nats.js.kv import KeyValue

from chaosbus.common import kvfollow, lastread, messages, natsauth, natsclient, ordered, patience, subjects
from chaosbus.common.errors import RetryLater
from chaosbus.common.kvbucket import KvEntry as KvEntry
from chaosbus.common.kvbucket import Stored as Stored
from chaosbus.common.kvbucket import TypedBucket as TypedBucket
from chaosbus.common.kvbucket import WrongRevision as WrongRevision
from chaosbus.common.wire import decode as decode
from chaosbus.common.wire import encode as encode

M = TypeVar("M", bound=messages.Message)
V = TypeVar("V")
S = TypeVar("S", bound=msgspec.Struct)
log = cblog.get("bus")

FOLLOW_HEARTBEAT_S = kvfollow.HEARTBEAT_S
PUBLISH_ACK_WAIT_S = 5.0  # nats-py's default for a JetStream request


class Refused(ConnectionError):
    """nats-server refused this client's credentials (or their absence)."""


async def connect(
    url: str,
    name: str,
    *,
    connect_timeout: float = 2.0,
    auth: natsauth.ClientAuth | None = None,
    give_up_after: float | None = None,
) -> Bus:
    """Connect with the settings a chaos tool needs: reconnect forever, notice a dead peer fast.
    `auth`: the credentials to present (default: the process's, natsauth.use); a server with
    authorization refuses a connection without them, and that ends the attempt at once (Refused)
    rather than retrying forever as an unreachable server does (unless `give_up_after` seconds:
    then ConnectionError, for a command that a person waits on).
    """
    check_url(url)
    refused = asyncio.Event()
    attempts: list[Client] = []

    async def _on_error(e: Exception) -> None:
        if "authorization violation" in str(e).lower() and not (attempts and attempts[-1].is_connected):
            refused.set()
        log.warning("nats error", error=str(e))

    auth = auth or natsauth.process_auth()
    options: dict[str, Any] = {
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "ping_interval": 5,
        "max_outstanding_pings": 3,
        "connect_timeout": connect_timeout,
        "allow_reconnect": True,
        "error_cb": _on_error,
        **(auth.connect_options() if auth is not None else {}),
    }
    connecting = asyncio.ensure_future(open_client(url, attempts=attempts, **options))
    waiting = asyncio.ensure_future(refused.wait())
    try:
        await asyncio.wait((connecting, waiting), timeout=give_up_after, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    if not connecting.done():
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        for nc in attempts:
            with contextlib.suppress(Exception):
                await nc.close()
        if refused.is_set():
            raise Refused(f"nats-server at {cblog.redact(url)} refused the credentials of {name}")
        raise ConnectionError(f"no NATS server answered at {cblog.redact(url)} within {give_up_after:.0f} s")
    nc = connecting.result()
    return Bus(nc, declares=auth is None or auth.declares)


class Bus:
    """One NATS connection with JetStream, typed publish and pull consumption."""

    def __init__(self, nc: Client, *, declares: bool = True) -> None:
        self.nc = nc
        self.declares = declares
        self.js: JetStreamContext = nc.jetstream()
        self._kv: dict[str, KeyValue] = {}
        self._buckets: dict[str, TypedBucket[Any]] = {}

    async def close(self) -> None:
        """Close the connection; never raises for a connection already gone (natsclient.Client logs
        it and finishes the cleanup), so the error a service is ending on is the one it reports.
        """
        # close, not drain: a draining pull subscription can hold shutdown for the drain timeout.
        if not self.nc.is_closed:
            await self.nc.close()

    async def ensure(self) -> None:
        """Declare every stream and bucket of the subject table (idempotent). With authorization
        only the admin identity declares (`chaosbus up`'s one step, or the deployment's): the
        others find them made.
        """
        if not self.declares:
            return
        for s in subjects.STREAMS:
            await self._ensure_stream(s)
        for b in subjects.BUCKETS:
            await self.kv(b.name, history=b.history)

    async def _ensure_stream(self, s: subjects.Stream[Any]) -> None:
        cfg = api.StreamConfig(
            name=s.name,
            subjects=list(s.subjects),
            retention=api.RetentionPolicy.WORK_QUEUE if s.work_queue else api.RetentionPolicy.LIMITS,
            max_msgs_per_subject=s.max_msgs_per_subject,
            max_age=s.max_age_s or None,
            storage=api.StorageType.FILE,
            duplicate_window=120.0,
        )
        # Looked up first: with authorization on, only the admin identity may create or change a
        # stream (one step at start, `chaosbus up` or the deployment's), and every other identity
        # may only find that it is there as the table says.
        try:
            current = (await self.js.stream_info(s.name)).config
        except NotFoundError:
            await self.js.add_stream(cfg)
            return
        if _stream_differs(current, cfg):
            await self.js.update_stream(cfg)

    async def bucket(self, entry: subjects.Bucket[V]) -> TypedBucket[V]:
        """The bucket `entry` of the subject table, values typed as the table declares them."""
        handle = self._buckets.get(entry.name)
        if handle is None or handle.entry is not entry:
            handle = TypedBucket(entry, await self.kv(entry.name, history=entry.history), self.follow_kv)
            self._buckets[entry.name] = handle
        return handle

    async def kv(self, bucket: str, *, history: int = 1) -> KeyValue:
        """nats-py's raw handle (bytes in and out), made if missing: services go through `bucket`,
        which types it; tests use this one to store what a service would refuse to.
        """
        kv = self._kv.get(bucket)
        if kv is None:
            try:
                kv = await self.js.key_value(bucket)
            except (NotFoundError, BadRequestError):
                kv = await self.js.create_key_value(bucket=bucket, history=history)
            self._kv[bucket] = kv
        return kv

    async def publish(
        self,
        stream: subjects.Stream[M],
        subject: str,
        msg: M,
        *,
        msg_id: str,
        seal: Callable[[str, bytes], bytes] | None = None,
    ) -> None:
        """JetStream publish on one of `stream`'s subjects, of its message type only, with an
        idempotency key, so a retried publish is stored once; `seal(subject, payload)` wraps the
        payload first (a signed envelope).
        """
        subjects.check(stream, subject, msg)
        data = encode(msg)
        await self._acked(subject, data if seal is None else seal(subject, data), msg_id, PUBLISH_ACK_WAIT_S)

    async def publish_encoded(
        self, stream: subjects.Stream[Any], subject: str, payload: bytes, *, msg_id: str, ack_wait_s: float
    ) -> None:
        """A message encoded earlier (a journaled outbox row, kept as the bytes it was written as)."""
        subjects.check(stream, subject)
        await self._acked(subject, payload, msg_id, ack_wait_s)

    async def _acked(self, subject: str, payload: bytes, msg_id: str, wait_s: float) -> None:
        """A JetStream publish, acknowledged within `wait_s` in all (nats.errors.TimeoutError). One
        that went out on a connection lost before its ack came (nats-server killed: the ack never
        comes) is published again on the next connection rather than waited out: JetStream stores a
        message id once, so one that did arrive is not stored twice.
        """
        deadline = time.monotonic() + wait_s
        headers = {"Nats-Msg-Id": msg_id}
        while True:
            await natsclient.until_connected(self.nc, deadline)
            left = max(deadline - time.monotonic(), 0.001)
            try:
                await natsclient.unless_lost(self.nc, self.js.publish(subject, payload, headers=headers, timeout=left))
                return
            except natsclient.ConnectionLost:
                log.info("NATS connection lost before the publish was acknowledged; publishing again", subject=subject)

    async def signal(
        self,
        entry: subjects.CoreSubject[S],
        subject: str,
        msg: S,
        *,
        seal: Callable[[str, bytes], bytes] | None = None,
    ) -> None:
        """Core NATS publish (at most once) of `entry`'s message type on one of its subjects."""
        subjects.check(entry, subject, msg)
        data = encode(msg)
        await self.nc.publish(subject, data if seal is None else seal(subject, data))

    async def listen(
        self,
        entry: subjects.CoreSubject[Any],
        cb: Callable[[Msg], Awaitable[None]],
        *,
        subject: str | None = None,
        queue: str = "",
    ) -> Subscription:
        """Core NATS subscription to `entry` (or one of its subjects); the callback gets the raw
        message: a signed one is opened by the receiver, a request is answered by it.
        """
        subjects.check(entry, subject or entry.pattern)
        return await self.nc.subscribe(subject or entry.pattern, queue=queue, cb=cb)

    async def request(self, entry: subjects.CoreSubject[Any], payload: bytes, *, wait_s: float) -> Msg:
        """A request on `entry` (request/reply): the raw reply, `entry.reply` or an ErrorReply."""
        return await self.nc.request(entry.pattern, payload, timeout=wait_s)

    async def consume(
        self,
        stream: subjects.Stream[M],
        handler: Callable[[M], Awaitable[None]],
        *,
        durable: str,
        filter_subject: str | None = None,
        batch: int = 64,
        ack_wait: float = 30.0,
        detach: Callable[[M], bool] | None = None,
        opener: Callable[[Msg], M | None] | None = None,
        subscribed: Callable[[], None] | None = None,
    ) -> None:
        """Pull from `durable`, a durable consumer of `stream` in the subject table (its filter the
        table's unless given), forever, decoding `stream.message`: ack after the handler, nak on its
        failure, term a message that does not decode (it would never decode on redelivery either).
        `opener`, when given, decodes instead (e.g. checking a signature first; None: term it).

        Messages for which `detach` says True (long-running ones: a Workflow Task) are handled
        beside the loop instead of in it, kept in progress meanwhile and acked when done, so they
        hold up neither the messages behind them nor their own redelivery timer. `subscribed` is
        called once the consumer is bound (what a readiness check waits for).
        """
        aside: set[asyncio.Task[None]] = set()
        try:
            fetched = self._fetched(stream, durable, filter_subject, batch, ack_wait, subscribed, alone_after_idle=True)
            async for msgs in fetched:
                for msg in msgs:
                    decoded = opener(msg) if opener is not None else _decode_or_log(msg, stream.message)
                    if detach is None:
                        await (msg.term() if decoded is None else self._run_handler(msg, handler, decoded))
                        continue
                    if decoded is None:
                        await msg.term()
                    elif detach(decoded):
                        task = asyncio.ensure_future(self._handle_aside(msg, handler, decoded, ack_wait))
                        aside.add(task)
                        task.add_done_callback(aside.discard)
                    else:
                        await self._run_handler(msg, handler, decoded)
        finally:
            for task in aside:  # unacked: redelivered to whoever consumes next
                task.cancel()

    async def consume_batches(
        self,
        stream: subjects.Stream[M],
        handler: Callable[[list[M]], Awaitable[set[int]]],
        *,
        durable: str,
        filter_subject: str | None = None,
        batch: int = 64,
        ack_wait: float = 30.0,
        opener: Callable[[Msg], M | None] | None = None,
        subscribed: Callable[[], None] | None = None,
    ) -> None:
        """As `consume`, but the handler gets every message of one fetch at once, so that it can
        fold them into fewer writes; it returns the indexes of those to redeliver shortly (not
        yet), and an exception redelivers them all. `opener` and `subscribed` as in `consume`.
        """
        async for msgs in self._fetched(stream, durable, filter_subject, batch, ack_wait, subscribed):
            decoded: list[tuple[Msg, M]] = []
            for msg in msgs:
                value = opener(msg) if opener is not None else _decode_or_log(msg, stream.message)
                if value is None:
                    await msg.term()
                else:
                    decoded.append((msg, value))
            if not decoded:
                continue
            try:
                later = await handler([v for _, v in decoded])
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a handler bug must not kill the consumer loop
                log.exception("handler failed; will be redelivered", durable=durable, error=str(e))
                for msg, _ in decoded:
                    await msg.nak(delay=1.0)
                continue
            for i, (msg, _) in enumerate(decoded):
                await (msg.nak(delay=0.2) if i in later else msg.ack())

    async def _fetched(
        self,
        stream: subjects.Stream[M],
        durable: str,
        filter_subject: str | None,
        batch: int,
        ack_wait: float,
        subscribed: Callable[[], None] | None = None,
        *,
        alone_after_idle: bool = False,
    ) -> AsyncIterator[list[Msg]]:
        """Fetches from a durable pull consumer, forever (empty ones skipped). `alone_after_idle`:
        after a fetch that found nothing, fetch one message, not a batch (for handlers that take
        one message at a time; a batch is what folds, so `consume_batches` keeps fetching those).
        nats-py's batch fetch can hold a message that reaches an idle consumer until the fetch's
        1 s window ends: 4-6 % of messages 0.05-1.5 s apart waited 0.2-0.7 s, none with one-message
        fetches (measured, docs/benchmarks.md).
        """
        if filter_subject is None:
            filter_subject = stream.pull_filter(durable)
        subjects.check(stream, filter_subject)
        cfg = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, ack_wait=ack_wait, max_deliver=-1)
        await patience.until_answered(lambda: self._refilter(stream, durable, filter_subject), durable, nc=self.nc)
        psub = await patience.until_answered(
            lambda: self.js.pull_subscribe(filter_subject, durable=durable, stream=stream.name, config=cfg),
            durable,
            nc=self.nc,
        )
        if subscribed is not None:
            subscribed()
        me = asyncio.current_task()
        idle = False  # a backlog found at start comes in batches
        while True:
            try:
                msgs = await psub.fetch(1 if idle and alone_after_idle else batch, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                msgs = []
            except ServiceUnavailableError:
                # JetStream not answering yet (a nats-server that has just restarted): the consumer
                # is still there; ask again shortly rather than end the service.
                log.warning("JetStream unavailable; fetching again", durable=durable)
                await asyncio.sleep(0.5)
                msgs = []
            # nats-py's fetch awaits asyncio.wait_for, which on Python 3.11 can swallow a cancel that
            # arrives together with a message; honour it here, or a service's shutdown hangs forever.
            # Messages fetched meanwhile stay unacked and are redelivered after ack_wait.
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
            idle = not msgs
            if msgs:
                yield msgs

    async def _refilter(self, stream: subjects.Stream[Any], durable: str, filter_subject: str) -> None:
        """A durable consumer made before its stream's subjects changed (a store kept across an
        upgrade: results became per node) keeps its old filter, which matches nothing now, and
        pull_subscribe would use it as it is: point it at the table's filter instead.
        """
        try:
            info = await self.js.consumer_info(stream.name, durable)
        except NotFoundError:
            return
        if info.config.filter_subject and info.config.filter_subject != filter_subject:
            log.warning(
                "durable consumer refiltered",
                stream=stream.name,
                durable=durable,
                was=info.config.filter_subject,
                now=filter_subject,
            )
            await self.js.add_consumer(
                stream.name, config=dataclasses.replace(info.config, filter_subject=filter_subject)
            )

    async def _handle_aside(
        self, msg: Msg, handler: Callable[[M], Awaitable[None]], decoded: M, ack_wait: float
    ) -> None:
        async def keep_in_progress() -> None:
            while True:
                await asyncio.sleep(ack_wait / 3)
                with contextlib.suppress(Exception):  # a reconnect: the next one will do
                    await msg.in_progress()

        beat = asyncio.ensure_future(keep_in_progress())
        try:
            await self._run_handler(msg, handler, decoded)
        finally:
            beat.cancel()

    async def _run_handler(self, msg: Msg, handler: Callable[[M], Awaitable[None]], decoded: M) -> None:
        try:
            await handler(decoded)
        except asyncio.CancelledError:
            raise
        except RetryLater as e:
            log.info("not yet; will be redelivered", subject=msg.subject, reason=str(e))
            await msg.nak(delay=0.2)
            return
        except Exception as e:  # a handler bug must not kill the consumer loop
            log.exception("handler failed; will be redelivered", subject=msg.subject, error=str(e))
            await msg.nak(delay=1.0)
            return
        await msg.ack()

    async def replay_and_follow(
        self,
        stream: subjects.Stream[M],
        handler: Callable[[M], Awaitable[None]],
        *,
        filter_subject: str | None = None,
        caught_up: asyncio.Event | None = None,
    ) -> None:
        """Ordered consumer from the start of a last-value stream (the subjects of `stream` that
        `filter_subject` matches, default all): current state, then live changes.
        `caught_up` is set once every message stored at subscription time has been handled.
        """
        filter_subject = filter_subject or stream.subjects[0]
        subjects.check(stream, filter_subject)
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def _cb(msg: Msg) -> None:
            await queue.put(msg)

        if caught_up is not None:
            info = await patience.until_answered(
                lambda: self.js.stream_info(stream.name, subjects_filter=filter_subject), filter_subject, nc=self.nc
            )
            if not info.state.messages:
                caught_up.set()
        # A consumer JetStream made although its answer was lost pushes to an inbox nobody reads
        # (nats-py subscribes it only once made) and is dropped once idle: asking again is safe.
        sub = await patience.until_answered(
            lambda: self.js.subscribe(
                filter_subject,
                stream=stream.name,
                cb=_cb,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.ALL,
                idle_heartbeat=FOLLOW_HEARTBEAT_S,
            ),
            filter_subject,
            nc=self.nc,
        )
        resuming = natsclient.resume_on_reconnect(self.nc, sub)
        try:
            while True:
                msg = await queue.get()
                decoded = _decode_or_log(msg, stream.message)
                if decoded is not None:
                    await ordered.handle(handler, decoded, msg.subject)
                if caught_up is not None and not caught_up.is_set() and msg.metadata.num_pending == 0:
                    caught_up.set()
        finally:
            resuming.cancel()

    async def last_messages(self, stream: subjects.Stream[M], filter_subject: str | None = None) -> list[M]:
        """The last message of every subject of `stream` matching `filter_subject` (default: all)
        now (undecodable ones left out, logged), read once: what a restarted reader compares the
        world with. Read again after a reconnect (`lastread`).
        """
        filter_subject = filter_subject or stream.subjects[0]
        subjects.check(stream, filter_subject)
        out: list[M] = []
        for msg in await lastread.last_per_subject(self.js, stream.name, filter_subject):
            decoded = _decode_or_log(msg, stream.message)
            if decoded is not None:
                out.append(decoded)
        return out

    def follow_kv(self, bucket: str, keys: str = ">") -> AsyncIterator[KvEntry | None]:
        """The current value of every key, then each change, forever; None once the snapshot is
        complete (`kvfollow`: resumes after a nats-server restart, missing nothing).
        """
        return kvfollow.follow(self.js, bucket, keys, made=lambda: self.kv(bucket))


def _stream_differs(current: api.StreamConfig, wanted: api.StreamConfig) -> bool:
    fields = ("subjects", "retention", "max_msgs_per_subject", "max_age", "storage", "duplicate_window")
    return any((getattr(current, f) or None) != (getattr(wanted, f) or None) for f in fields)


def _decode_or_log(msg: Msg, kind: type[M]) -> M | None:
    """The decoded message, or None (logged) for one that will never decode: never fatal."""
    try:
        return decode(msg.data, kind)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as e:
        log.error("malformed message dropped", subject=msg.subject, error=str(e)[:500])
        return None
