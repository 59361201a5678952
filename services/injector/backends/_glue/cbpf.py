"""Classic BPF for the shaping classifier: a tiny assembler and the program that maps a packet to
an HTB class. Pure (bytes out); `backends/tc.py` loads it with cls_bpf, which runs classic BPF
natively and treats the program's return value as the class id (0: no match).

Loads are relative to the network header (SKF_NET_OFF), so the program does not depend on the
link layer, and the L4 header is found through the IP header length (`ldx 4*([0]&0xf)`), so IP
options do not shift the ports. Ports are read only for TCP, UDP, SCTP and DCCP first fragments.
One program replaces the previous one atomically: there is never a moment with half a classifier.

Layout (every jump forward, conditional jumps within 255 instructions):

    non-IPv4                      -> ret default
    M[0]=daddr M[1]=saddr M[2]=dport M[3]=sport (ports 0 when there are none)
    each exemption, as dst and src -> ret root (HTB's direct queue: never shaped)
    runs of matches, most specific first (a run shares prefix length, port-ness and class, so one
    `and` and a chain of `jeq`s test them all) -> ret class
    ret default
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from chaosbus.injector.backends.tcplan import Dest, Match

MAX_INSNS = 4096  # BPF_MAXINSNS
SKF_AD_OFF = -0x1000
SKF_AD_PROTOCOL = 0
SKF_NET_OFF = -0x100000
ETH_P_IP = 0x0800
PORT_PROTOCOLS = (6, 17, 132, 33)  # tcp, udp, sctp, dccp: ports at the same offsets

# opcodes (linux/filter.h)
LD, LDX, ST, ALU, JMP, RET = 0x00, 0x01, 0x02, 0x04, 0x05, 0x06
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, MSH = 0x00, 0x20, 0x40, 0x60, 0xA0
AND = 0x50
JA, JEQ, JSET = 0x00, 0x10, 0x40
_CHUNK = 200  # jeq's per chain, so a jump to the chain's `ret` stays within 255


class ProgramTooLarge(ValueError):
    """More destinations than one classic BPF program can test."""


@dataclass
class _Insn:
    code: int
    k: int = 0
    jt: str | None = None
    jf: str | None = None


class Asm:
    """Instructions with symbolic forward labels; `assemble` resolves them."""

    def __init__(self) -> None:
        self.insns: list[_Insn] = []
        self.labels: dict[str, int] = {}
        self._n = 0

    def label(self, name: str | None = None) -> str:
        self._n += 1
        return name or f"L{self._n}"

    def here(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def op(self, code: int, k: int = 0, jt: str | None = None, jf: str | None = None) -> None:
        self.insns.append(_Insn(code, k & 0xFFFFFFFF, jt, jf))

    def assemble(self) -> bytes:
        if len(self.insns) > MAX_INSNS:
            raise ProgramTooLarge(f"classifier needs {len(self.insns)} instructions (at most {MAX_INSNS})")
        out = bytearray()
        for i, ins in enumerate(self.insns):
            jt, jf, k = self._off(i, ins.jt), self._off(i, ins.jf), ins.k
            if ins.code == JMP | JA:
                k, jt, jf = jt, 0, 0
            elif jt > 255 or jf > 255:
                raise AssertionError(f"conditional jump too far at {i}")
            out += struct.pack("=HBBI", ins.code, jt, jf, k)
        return bytes(out)

    def _off(self, i: int, label: str | None) -> int:
        if label is None:
            return 0
        off = self.labels[label] - (i + 1)
        if off < 0:
            raise AssertionError(f"backward jump at {i}")
        return off


def classifier(matches: Sequence[Match], default: int, exempt: Sequence[Dest], root: int) -> bytes:
    """The program: exempt -> `root`, else the first matching class, else `default` (0: none).

    Raises:
        ProgramTooLarge: too many destinations for one program.
    """
    a = Asm()
    ipv4 = a.label()
    a.op(LD | H | ABS, SKF_AD_OFF + SKF_AD_PROTOCOL)
    a.op(JMP | JEQ, ETH_P_IP, jt=ipv4)
    a.op(RET, default)
    a.here(ipv4)
    for slot, offset in ((0, 16), (1, 12)):
        a.op(LD | W | ABS, SKF_NET_OFF + offset)
        a.op(ST, slot)
    if any(d.port is not None for d in exempt) or any(m.dest.port is not None for m in matches):
        _load_ports(a)
    for d in exempt:
        for addr_slot, port_slot in ((0, 2), (1, 3)):
            _test(a, d, addr_slot, port_slot, root)
    for (prefixlen, ported, classid), group in groupby(
        matches, key=lambda m: (m.dest.network.prefixlen, m.dest.port is not None, m.classid)
    ):
        run = [m.dest for m in group]
        if ported:
            for d in run:
                _test(a, d, 0, 2, classid)
        else:
            _chain(a, run, prefixlen, classid)
    a.op(RET, default)
    return a.assemble()


def _load_ports(a: Asm) -> None:
    l4, done = a.label(), a.label()
    a.op(LD | IMM, 0)
    a.op(ST, 2)
    a.op(ST, 3)
    a.op(LD | H | ABS, SKF_NET_OFF + 6)
    a.op(JMP | JSET, 0x1FFF, jt=done)  # a non-first fragment has no L4 header
    a.op(LD | B | ABS, SKF_NET_OFF + 9)
    for i, proto in enumerate(PORT_PROTOCOLS):
        a.op(JMP | JEQ, proto, jt=l4, jf=done if i == len(PORT_PROTOCOLS) - 1 else None)
    a.here(l4)
    a.op(LDX | B | MSH, SKF_NET_OFF)  # X = 4 * IHL
    a.op(LD | H | IND, SKF_NET_OFF + 2)
    a.op(ST, 2)
    a.op(LD | H | IND, SKF_NET_OFF)
    a.op(ST, 3)
    a.here(done)


def _test(a: Asm, d: Dest, addr_slot: int, port_slot: int, ret: int) -> None:
    skip = a.label()
    a.op(LD | MEM, addr_slot)
    mask = _mask(d.network.prefixlen)
    if mask != 0xFFFFFFFF:
        a.op(ALU | AND, mask)
    a.op(JMP | JEQ, int(d.network.network_address), jf=skip)
    if d.port is not None:
        a.op(LD | MEM, port_slot)
        a.op(JMP | JEQ, d.port, jf=skip)
    a.op(RET, ret)
    a.here(skip)


def _chain(a: Asm, nets: list[Dest], prefixlen: int, classid: int) -> None:
    mask = _mask(prefixlen)
    for start in range(0, len(nets), _CHUNK):
        hit, after = a.label(), a.label()
        a.op(LD | MEM, 0)
        if mask != 0xFFFFFFFF:
            a.op(ALU | AND, mask)
        for d in nets[start : start + _CHUNK]:
            a.op(JMP | JEQ, int(d.network.network_address), jt=hit)
        a.op(JMP | JA, jt=after)
        a.here(hit)
        a.op(RET, classid)
        a.here(after)


def _mask(prefixlen: int) -> int:
    return (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF
