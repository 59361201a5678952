"""One-off reads of the last message of every subject of a stream that matches a filter, through an
ordered consumer: what a restarted reader compares the world with (`bus.last_messages`), a KV
bucket's current values (`kvsnapshot`).

The server's own delivered count decides when the read is complete: nothing pending and nothing
ever delivered means no subject matches; otherwise the read ends with the message after which the
server had nothing more pending. (The consumer's info and its messages travel on different paths,
so "nothing received yet" says nothing.)

A connection lost mid-read (a nats-server restart: the consumer is gone with it, and its messages
stop) starts the read over on the next connection instead of waiting for messages that will never
come, for up to `patience_s` in all; a message that does not come while the connection stays up
fails the read after `stall_s` (TimeoutError), as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from chaosbus.common import logging as cblog
from chaosbus.common import natsclient, patience
from chaosbus.common.tcpnats import tcp_only

with tcp_only():
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext, api

log = cblog.get("bus")
STALL_S = 10.0  # a pushed message that never comes fails the read instead of hanging it
PATIENCE_S = patience.SETUP_PATIENCE_S


class _Stalled(Exception):
    pass


async def last_per_subject(
    js: JetStreamContext,
    stream: str,
    filter_subject: str,
    *,
    stall_s: float = STALL_S,
    patience_s: float = PATIENCE_S,
) -> list[Msg]:
    """The last message of every subject of `stream` matching `filter_subject`, in stream order."""
    nc: Client = js._nc  # nats-py keeps a context's connection private
    since, attempt = time.monotonic(), 0
    while True:
        try:
            await natsclient.until_connected(nc, since + patience_s)
            messages = await _read_once(nc, js, stream, filter_subject, stall_s)
        except _Stalled:
            raise TimeoutError(f"a message of {stream} ({filter_subject}) never came within {stall_s:.0f} s") from None
        except patience.UNREACHABLE as e:
            attempt += 1
            if nc.is_closed or time.monotonic() - since > patience_s:
                raise
            if attempt == 1:
                log.warning("one-off read interrupted; reading again", stream=stream, error=str(e) or type(e).__name__)
            if not isinstance(e, natsclient.ConnectionLost):  # lost: read again once reconnected
                await asyncio.sleep(patience.backoff(attempt, 0.1))
            continue
        if attempt:
            log.info("one-off read done after a reconnect", stream=stream, tries=attempt + 1)
        return messages


async def _read_once(nc: Client, js: JetStreamContext, stream: str, filter_subject: str, stall_s: float) -> list[Msg]:
    """One read on the current connection; ConnectionLost once that connection is lost."""
    queue: asyncio.Queue[Msg | None] = asyncio.Queue()
    gone = natsclient.lost(nc)

    def interrupt(_: object) -> None:
        queue.put_nowait(None)

    async def _cb(msg: Msg) -> None:
        await queue.put(msg)

    gone.add_done_callback(interrupt)
    sub = None
    try:
        sub = await natsclient.unless_lost(
            nc,
            js.subscribe(
                filter_subject,
                stream=stream,
                cb=_cb,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            ),
        )
        info = await natsclient.unless_lost(nc, sub.consumer_info())
        if info.num_pending == 0 and (info.delivered.consumer_seq if info.delivered else 0) == 0:
            return []
        out: list[Msg] = []
        while True:
            try:
                msg = await asyncio.wait_for(queue.get(), timeout=stall_s)
            except TimeoutError:
                raise _Stalled from None
            if msg is None:
                raise natsclient.ConnectionLost("the NATS connection was lost mid-read")
            out.append(msg)
            if msg.metadata.num_pending == 0:
                return out
    finally:
        gone.remove_done_callback(interrupt)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
