"""The current values of a KV bucket's keys, read once, with nothing missed.

nats-py's `KeyValue.watch` decides that the initial values are complete when the consumer's
info says nothing is pending and the client has received nothing yet. The server answers that
info request on another path than it pushes messages, so the answer can come first: a value
already counted as delivered but still on the wire is then reported as "no values", and a listing
right after a write misses it. Here the server's own delivered count decides instead: nothing is
pending and nothing was ever delivered means no key matches; otherwise the snapshot ends with the
message after which the server had nothing more pending.
"""

from __future__ import annotations

import asyncio
import contextlib

from chaosbus.common.tcpnats import tcp_only

with tcp_only():
    from nats.aio.msg import Msg
    from nats.js import api
    from nats.js.kv import KeyValue

DELETE_OPS = ("DEL", "PURGE")
SNAPSHOT_WAIT_S = 10.0  # a pushed value that never arrives fails the read instead of hanging it


async def snapshot(kv: KeyValue, keys: str = ">") -> list[tuple[str, bytes, int]]:
    """(key, value, revision) of every live key matching `keys`, in the bucket's order."""
    # nats-py keeps the bucket's JetStream context, stream and subject prefix private; they are
    # what its own watch uses.
    js, stream, prefix = kv._js, kv._stream, kv._pre
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def _cb(msg: Msg) -> None:
        await queue.put(msg)

    sub = await js.subscribe(
        f"{prefix}{keys}",
        stream=stream,
        cb=_cb,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
    )
    found: dict[str, tuple[bytes, int]] = {}
    try:
        info = await sub.consumer_info()
        if info.num_pending == 0 and (info.delivered.consumer_seq if info.delivered else 0) == 0:
            return []
        while True:
            msg = await asyncio.wait_for(queue.get(), timeout=SNAPSHOT_WAIT_S)
            meta = msg.metadata
            key = msg.subject[len(prefix) :]
            header = msg.header or {}
            if header.get("KV-Operation", "") in DELETE_OPS or "Nats-Marker-Reason" in header:
                found.pop(key, None)
            else:
                found[key] = (msg.data, meta.sequence.stream)
            if meta.num_pending == 0:
                break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return [(key, value, revision) for key, (value, revision) in found.items()]
