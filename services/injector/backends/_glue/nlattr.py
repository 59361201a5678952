"""Reading a netlink attribute list: what the nftables and tc dumps both answer in."""

from __future__ import annotations

import struct


def attributes(payload: bytes, start: int = 0) -> dict[int, bytes]:
    """Top-level attributes from byte `start`: type (nested and byte-order flags dropped) -> value."""
    out: dict[int, bytes] = {}
    pos = start
    while pos + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, pos)
        if length < 4:
            break
        out[kind & 0x3FFF] = payload[pos + 4 : pos + length]
        pos += (length + 3) & ~3
    return out
