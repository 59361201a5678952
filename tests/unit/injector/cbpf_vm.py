"""A classic-BPF interpreter for the instructions the shaping classifier uses, so its programs can be
run on synthetic packets without a kernel. Semantics as in net/core/filter.c for cls_bpf: loads at
SKF_NET_OFF+k read the network header, SKF_AD_OFF+SKF_AD_PROTOCOL reads the ethertype, an
out-of-packet load ends the program with 0.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from chaosbus.injector.backends._glue import cbpf

U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Packet:
    ethertype: int
    net: bytes  # from the network header on


def ipv4(
    src: str, dst: str, proto: int = 6, sport: int = 0, dport: int = 0, *, ihl: int = 5, frag_offset: int = 0
) -> Packet:
    header = bytearray(ihl * 4)
    header[0] = 0x40 | ihl
    struct.pack_into("!H", header, 6, frag_offset & 0x1FFF)
    header[9] = proto
    header[12:16] = socket.inet_aton(src)
    header[16:20] = socket.inet_aton(dst)
    return Packet(0x0800, bytes(header) + struct.pack("!HH", sport, dport) + b"\0" * 16)


def run(program: bytes, packet: Packet) -> int:
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    a = x = 0
    mem = [None] * 16
    pc = 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if cls == cbpf.RET:
            return k
        if cls in (cbpf.LD, cbpf.LDX):
            mode, size = code & 0xE0, code & 0x18
            if mode == cbpf.IMM:
                a = k
            elif mode == cbpf.MEM:
                assert mem[k] is not None, f"M[{k}] read before written"
                a = mem[k]
            elif mode == cbpf.MSH:
                b = _load(packet, k, 1)
                if b is None:
                    return 0
                x = (b & 0xF) * 4
            else:
                offset = k if mode == cbpf.ABS else (x + _signed(k)) & U32
                value = _load(packet, offset, {cbpf.W: 4, cbpf.H: 2, cbpf.B: 1}[size])
                if value is None:
                    return 0
                a = value
        elif cls == cbpf.ST:
            mem[k] = a
        elif cls == cbpf.ALU:
            assert code & 0xF0 == cbpf.AND
            a &= k
        elif cls == cbpf.JMP:
            op = code & 0xF0
            if op == cbpf.JA:
                pc += k
            else:
                taken = (a == k) if op == cbpf.JEQ else bool(a & k)
                pc += jt if taken else jf
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def _signed(k: int) -> int:
    return k - (1 << 32) if k & 0x80000000 else k


def _load(packet: Packet, k: int, size: int) -> int | None:
    k = _signed(k)
    if k == cbpf.SKF_AD_OFF + cbpf.SKF_AD_PROTOCOL:
        return packet.ethertype
    if k < cbpf.SKF_NET_OFF or k >= cbpf.SKF_AD_OFF:
        return None
    offset = k - cbpf.SKF_NET_OFF
    if offset + size > len(packet.net):
        return None
    return int.from_bytes(packet.net[offset : offset + size], "big")
