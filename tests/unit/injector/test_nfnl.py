"""The raw nfnetlink table delete, byte for byte: the batch the kernel gets (BEGIN, an acknowledged
DELTABLE for `inet <name>`, END) and how its answer is read (ack, ENOENT, other errors, replies to
someone else's request skipped). tests/privileged/test_libnft.py runs it against the kernel.
"""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from chaosbus.injector.backends._glue import nfnl


def messages(batch: bytes) -> list[tuple[int, int, int, bytes]]:
    out, pos = [], 0
    while pos < len(batch):
        length, kind, flags, seq, _ = struct.unpack_from("=IHHII", batch, pos)
        out.append((kind, flags, seq, batch[pos + 16 : pos + length]))
        pos += length
    return out


def test_the_batch_deletes_one_inet_table_by_name_and_asks_for_one_ack() -> None:
    begin, delete, end = messages(nfnl.delete_table_request("chaosbus_abc", seq=41))
    assert (begin[0], end[0]) == (0x10, 0x11) and begin[2] == 40 and end[2] == 42
    assert begin[3][2:4] == socket.htons(10).to_bytes(2, "little")  # res_id: the nftables subsystem
    kind, flags, seq, body = delete
    assert kind == (10 << 8) | 2 and flags == 0x1 | 0x4 and seq == 41  # NFT_MSG_DELTABLE, request + ack
    assert body[0] == 1  # NFPROTO_INET
    alen, atype = struct.unpack_from("=HH", body, 4)
    assert atype == 1 and body[8 : 4 + alen] == b"chaosbus_abc\0"  # NFTA_TABLE_NAME, NUL-terminated
    assert len(body) % 4 == 0


def reply(seq: int, error: int) -> bytes:
    return struct.pack("=IHHII", 36, 2, 0, seq, 0) + struct.pack("=i", error) + b"\0" * 16


def test_the_answer_is_the_error_of_our_message_only() -> None:
    ours = range(40, 43)
    assert nfnl.error_of(reply(41, 0), ours) == 0
    assert nfnl.error_of(reply(41, -errno.ENOENT), ours) == errno.ENOENT
    assert nfnl.error_of(reply(7, -errno.EPERM), ours) is None  # an old request's late answer
    assert nfnl.error_of(reply(7, 0) + reply(40, -errno.EINVAL), ours) == errno.EINVAL
    assert nfnl.error_of(b"", ours) is None


def test_the_existence_check_is_one_acknowledged_gettable() -> None:
    [(kind, flags, seq, body)] = messages(nfnl.get_table_request("chaosbus_abc", seq=9))
    assert kind == (10 << 8) | 1 and flags == 0x1 | 0x4 and seq == 9 and body[0] == 1
    assert body[8 : 8 + len(b"chaosbus_abc\0")] == b"chaosbus_abc\0"


def table_message(seq: int, name: str) -> bytes:
    value = name.encode() + b"\0"
    attribute = struct.pack("=HH", 4 + len(value), 1) + value
    attribute += b"\0" * (-len(attribute) % 4)
    body = struct.pack("=BBH", 1, 0, 0) + struct.pack("=HH", 8, 0x8000 | 2) + b"\0" * 4 + attribute
    return struct.pack("=IHHII", 16 + len(body), (10 << 8) | 0, 0x2, seq, 0) + body


def test_the_listing_is_one_dump_of_inet_tables() -> None:
    [(kind, flags, seq, body)] = messages(nfnl.list_tables_request(seq=5))
    assert kind == (10 << 8) | 1 and flags == 0x1 | 0x300 and seq == 5  # GETTABLE, request + dump
    assert body[0] == 1  # NFPROTO_INET: the other families' tables are none of ours


def test_a_dump_answer_gives_our_tables_names_until_done() -> None:
    first = table_message(5, "chaosbus_a") + table_message(4, "stale") + table_message(5, "filter")
    assert nfnl.tables_in(first, 5) == (False, ["chaosbus_a", "filter"])  # an old request's answer skipped
    done = struct.pack("=IHHII", 20, 3, 0x2, 5, 0) + struct.pack("=i", 0)
    assert nfnl.tables_in(table_message(5, "chaosbus_b") + done, 5) == (True, ["chaosbus_b"])
    refused = struct.pack("=IHHII", 36, 2, 0, 5, 0) + struct.pack("=i", -errno.EPERM) + b"\0" * 16
    with pytest.raises(OSError) as failure:
        nfnl.tables_in(refused, 5)
    assert failure.value.errno == errno.EPERM
