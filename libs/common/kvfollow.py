"""Following a KV bucket: the current value of every key, then each change, forever. Like nats-py's
`watchall`, but with a short idle heartbeat, and re-created at once after a reconnect
(`natsclient.resume_on_reconnect`), so that it resumes right after a nats-server restart, from the
last revision it saw, missing nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from chaosbus.common import natsclient, patience
from chaosbus.common.kvbucket import KvEntry
from chaosbus.common.tcpnats import tcp_only

with tcp_only():
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext, api

# Followers (ordered consumers) are also re-created by nats-py once two idle heartbeats are missed
# (a consumer lost while the connection stays: a lame-duck server shutting JetStream down); its
# default of 5 s left a service deaf for 10-15 s, 1 s makes it ~2 s.
HEARTBEAT_S = 1.0
DELETE_OPS = ("DEL", "PURGE")


async def follow(
    js: JetStreamContext, bucket: str, keys: str, *, made: Callable[[], Awaitable[object]]
) -> AsyncIterator[KvEntry | None]:
    """The current value of every key of `bucket` matching `keys`, then each change; None once the
    snapshot is complete. `made()` makes the bucket if missing (asked again while NATS is away).
    """
    nc = js._nc  # nats-py keeps a context's connection private
    await patience.until_answered(made, bucket, nc=nc)  # it exists before anyone follows it
    queue: asyncio.Queue[KvEntry | None] = asyncio.Queue()
    prefix = f"$KV.{bucket}."
    snapshot_done = False

    async def _cb(msg: Msg) -> None:
        nonlocal snapshot_done
        meta = msg.metadata
        op = (msg.header or {}).get("KV-Operation", "")
        await queue.put(
            KvEntry(
                key=msg.subject[len(prefix) :], value=msg.data, revision=meta.sequence.stream, deleted=op in DELETE_OPS
            )
        )
        if not snapshot_done and meta.num_pending == 0:
            snapshot_done = True
            await queue.put(None)

    sub = await patience.until_answered(
        lambda: js.subscribe(
            f"{prefix}{keys}",
            stream=f"KV_{bucket}",
            cb=_cb,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            idle_heartbeat=HEARTBEAT_S,
        ),
        bucket,
        nc=nc,
    )
    resuming = natsclient.resume_on_reconnect(nc, sub)
    try:
        info = await patience.until_answered(sub.consumer_info, bucket, nc=nc)
        delivered = info.delivered.stream_seq if info.delivered else 0
        if not snapshot_done and info.num_pending == 0 and delivered == 0:
            snapshot_done = True  # an empty bucket: nothing will arrive to say so
            await queue.put(None)
        while True:
            yield await queue.get()
    finally:
        resuming.cancel()
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
