"""The current values of a KV bucket's keys, read once, with nothing missed: the last message of
each key's subject (`lastread`, which decides completeness by the server's delivered count, not by
what the client has received, and reads again after a nats-server restart), delete and purge
markers leaving the key out.

nats-py's own `KeyValue.watch` decides that the initial values are complete when the consumer's
info says nothing is pending and the client has received nothing yet; the info can come before a
value already on the wire, and a listing right after a write then misses it.
"""

from __future__ import annotations

from chaosbus.common import lastread
from chaosbus.common.tcpnats import tcp_only

with tcp_only():
    from nats.js.kv import KeyValue

DELETE_OPS = ("DEL", "PURGE")


async def snapshot(kv: KeyValue, keys: str = ">") -> list[tuple[str, bytes, int]]:
    """(key, value, revision) of every live key matching `keys`, in the bucket's order."""
    # nats-py keeps the bucket's JetStream context, stream and subject prefix private; they are
    # what its own watch uses.
    js, stream, prefix = kv._js, kv._stream, kv._pre
    found: dict[str, tuple[bytes, int]] = {}
    for msg in await lastread.last_per_subject(js, stream, f"{prefix}{keys}"):
        key = msg.subject[len(prefix) :]
        header = msg.header or {}
        if header.get("KV-Operation", "") in DELETE_OPS or "Nats-Marker-Reason" in header:
            found.pop(key, None)
        else:
            found[key] = (msg.data, msg.metadata.sequence.stream)
    return [(key, value, revision) for key, (value, revision) in found.items()]
