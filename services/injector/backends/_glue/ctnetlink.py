"""One conntrack lookup over ctnetlink: the original tuple of the flow whose reply tuple is known.

The DNSChaos responder receives a redirected query from (client address, client port) on its own
port; the flow's reply tuple is therefore (ours -> the client), and the kernel finds the entry by it
in one request (IPCTNL_MSG_CT_GET with CTA_TUPLE_REPLY), where reading /proc/net/nf_conntrack
would scan every flow of the namespace. Open the socket inside the namespace to look at. IPv4.
"""

from __future__ import annotations

import socket
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 0x2
NLA_F_NESTED = 0x8000
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY = 1, 2
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
PROTOCOLS = {"udp": socket.IPPROTO_UDP, "tcp": socket.IPPROTO_TCP}
TIMEOUT_S = 1.0


def _attr(kind: int, payload: bytes, nested: bool = False) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind | (NLA_F_NESTED if nested else 0)) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, i)
        if length < 4:
            break
        out[kind & ~NLA_F_NESTED & 0x7FFF] = data[i + 4 : i + length]
        i += (length + 3) & ~3
    return out


def get_request(proto: str, reply_src: tuple[str, int], reply_dst: tuple[str, int], seq: int) -> bytes:
    """The GET for the flow whose reply goes from `reply_src` to `reply_dst`. Pure."""
    ip = _attr(CTA_IP_V4_SRC, socket.inet_aton(reply_src[0])) + _attr(CTA_IP_V4_DST, socket.inet_aton(reply_dst[0]))
    l4 = (
        _attr(CTA_PROTO_NUM, struct.pack("B", PROTOCOLS[proto]))
        + _attr(CTA_PROTO_SRC_PORT, struct.pack("!H", reply_src[1]))
        + _attr(CTA_PROTO_DST_PORT, struct.pack("!H", reply_dst[1]))
    )
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + _attr(
        CTA_TUPLE_REPLY, _attr(CTA_TUPLE_IP, ip, True) + _attr(CTA_TUPLE_PROTO, l4, True), True
    )
    kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST, seq, 0) + body


def parse_original_destination(reply: bytes) -> tuple[str, int] | None:
    """The original tuple's destination in a ctnetlink answer; None for an error (no such flow). Pure."""
    if len(reply) < 20:
        return None
    _, kind, _, _, _ = struct.unpack_from("=IHHII", reply, 0)
    if kind == NLMSG_ERROR:
        return None
    orig = _attrs(_attrs(reply[20:]).get(CTA_TUPLE_ORIG, b""))
    ip, l4 = _attrs(orig.get(CTA_TUPLE_IP, b"")), _attrs(orig.get(CTA_TUPLE_PROTO, b""))
    if CTA_IP_V4_DST not in ip or CTA_PROTO_DST_PORT not in l4:
        return None
    return socket.inet_ntoa(ip[CTA_IP_V4_DST][:4]), struct.unpack("!H", l4[CTA_PROTO_DST_PORT][:2])[0]


class Conntrack:
    """A ctnetlink socket in the calling thread's namespace."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.settimeout(TIMEOUT_S)
        self._seq = 0

    def original_destination(
        self, proto: str, reply_src: tuple[str, int], reply_dst: tuple[str, int]
    ) -> tuple[str, int] | None:
        self._seq += 1
        self.sock.send(get_request(proto, reply_src, reply_dst, self._seq))
        while True:
            data = self.sock.recv(65536)
            _, _, _, seq, _ = struct.unpack_from("=IHHII", data, 0)
            if seq == self._seq:
                return parse_original_destination(data)

    def close(self) -> None:
        self.sock.close()
