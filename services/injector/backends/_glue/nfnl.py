"""Deleting an nftables table with one raw nfnetlink batch, on a socket opened inside the target
netns: what a recovery does, in 0.03 ms instead of libnftables' 0.3 ms (measured), which first
fetches its rule cache and parses a script. Also the one-round-trip check whether a table exists,
which lets a first apply skip the replace (and its cache fetch), and the one-dump listing of a
netns's tables that the orphan sweep reads (no process, no rule cache). Tables are still built from
rendered text by libnftables (or nft), where the parser's checks are worth their cost.

The batch is BEGIN, DELTABLE (family inet, by name, acknowledged), END: the kernel commits it as
one transaction, exactly like `nft delete table inet <name>`. A table that is not there is not an
error (ENOENT): the fault is already gone.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from chaosbus.injector.backends._glue.nlattr import attributes

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 0x2, 0x3
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFT_MSG_DELTABLE = 0, 1, 2
NFTA_TABLE_NAME = 1
NFPROTO_INET = 1
AF_UNSPEC = 0
TIMEOUT_S = 5.0

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, resource id (big endian)


def open_socket() -> socket.socket:
    """A NETLINK_NETFILTER socket in the calling thread's netns (call it from inside the target's)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        sock.settimeout(TIMEOUT_S)
    except OSError:
        sock.close()
        raise
    return sock


def _name_attribute(table: str) -> bytes:
    name = table.encode() + b"\0"
    attribute = struct.pack("=HH", 4 + len(name), NFTA_TABLE_NAME) + name
    return attribute + b"\0" * (-len(attribute) % 4)


def get_table_request(table: str, seq: int) -> bytes:
    """An acknowledged GETTABLE for `inet <table>` (not a batch: reads need none)."""
    return _message(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        NFPROTO_INET,
        0,
        _name_attribute(table),
    )


def list_tables_request(seq: int) -> bytes:
    """A dump of every `inet` table (one NEWTABLE message each, then NLMSG_DONE)."""
    return _message((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, NLM_F_REQUEST | NLM_F_DUMP, seq, NFPROTO_INET, 0)


def delete_table_request(table: str, seq: int) -> bytes:
    """The batch that deletes `inet <table>`; its DELTABLE message carries sequence `seq`."""
    attribute = _name_attribute(table)
    return (
        _message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq - 1, AF_UNSPEC, NFNL_SUBSYS_NFTABLES)
        + _message(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE, NLM_F_REQUEST | NLM_F_ACK, seq, NFPROTO_INET, 0, attribute
        )
        + _message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 1, AF_UNSPEC, NFNL_SUBSYS_NFTABLES)
    )


def _message(kind: int, flags: int, seq: int, family: int, resource: int, payload: bytes = b"") -> bytes:
    body = _NFGEN.pack(family, 0, socket.htons(resource)) + payload
    return _HEADER.pack(_HEADER.size + len(body), kind, flags, seq & 0xFFFFFFFF, 0) + body


def error_of(reply: bytes, seqs: range) -> int | None:
    """The errno (0: acknowledged) in the first NLMSG_ERROR of `reply` about a message of `seqs`;
    None if there is none (the caller reads again).
    """
    offset = 0
    while offset + _HEADER.size <= len(reply):
        length, kind, _flags, seq, _port = _HEADER.unpack_from(reply, offset)
        if length < _HEADER.size:
            break
        if kind == NLMSG_ERROR and seq in seqs:
            return -int(struct.unpack_from("=i", reply, offset + _HEADER.size)[0])
        offset += (length + 3) & ~3
    return None


def delete_table(sock: socket.socket, table: str) -> bool:
    """Delete `inet <table>` in the socket's netns: True if it was there, False if it was not.

    Raises:
        OSError: the kernel refused (errno and text), or did not answer within TIMEOUT_S.
    """
    seq = _next_seq()
    sock.send(delete_table_request(table, seq))
    wanted = range(seq - 1, seq + 2)
    while True:
        code = error_of(sock.recv(65536), wanted)
        if code is None:
            continue  # an answer to an earlier request that timed out: not ours
        if code == 0:
            return True
        if code == errno.ENOENT:
            return False
        raise OSError(code, f"nft delete table inet {table}: {errno.errorcode.get(code, code)}")


def table_exists(sock: socket.socket, table: str) -> bool:
    """Whether `inet <table>` exists in the socket's netns (one round trip, ~0.03 ms).

    Raises:
        OSError: the kernel refused the request, or did not answer within TIMEOUT_S.
    """
    seq = _next_seq()
    sock.send(get_table_request(table, seq))
    while True:
        code = error_of(sock.recv(65536), range(seq, seq + 1))
        if code is None:
            continue  # the table itself (NEWTABLE) comes before the acknowledgement
        if code == 0:
            return True
        if code == errno.ENOENT:
            return False
        raise OSError(code, f"nft list table inet {table}: {errno.errorcode.get(code, code)}")


def list_tables(sock: socket.socket) -> list[str]:
    """The names of the `inet` tables in the socket's netns: one dump, no libnftables cache fetch
    and no process (what `nft list tables` prints, for the orphan sweeper).

    Raises:
        OSError: the kernel refused the dump, or did not answer within TIMEOUT_S.
    """
    seq = _next_seq()
    sock.send(list_tables_request(seq))
    names: list[str] = []
    while True:
        done, found = tables_in(sock.recv(1 << 16), seq)
        names += found
        if done:
            return names


def tables_in(reply: bytes, seq: int) -> tuple[bool, list[str]]:
    """The table names in one read of a dump's answer (`seq`), and whether the dump ended there.
    Messages about other sequence numbers (an earlier request that timed out) are skipped.

    Raises:
        OSError: the kernel answered the dump with an error.
    """
    names: list[str] = []
    offset = 0
    while offset + _HEADER.size <= len(reply):
        length, kind, _flags, got, _port = _HEADER.unpack_from(reply, offset)
        if length < _HEADER.size:
            break
        if got == seq:
            if kind == NLMSG_DONE:
                return True, names
            if kind == NLMSG_ERROR:
                code = -int(struct.unpack_from("=i", reply, offset + _HEADER.size)[0])
                raise OSError(code, f"nft list tables: {errno.errorcode.get(code, code)}")
            if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE:
                name = attributes(reply[offset + _HEADER.size + _NFGEN.size : offset + length]).get(NFTA_TABLE_NAME)
                if name is not None:
                    names.append(name.split(b"\0", 1)[0].decode(errors="replace"))
        offset += (length + 3) & ~3
    return False, names


def _next_seq() -> int:
    """A random sequence number (a multiple of 4, plus 1, so the batch around it fits): an answer
    to an earlier request on the same socket that timed out matches a later request only by a
    one-in-a-billion chance, and no counter is shared between sockets or injectors."""
    return int.from_bytes(os.urandom(4), "big") % 0x1FFFFFFC * 4 + 1
