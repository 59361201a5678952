"""The shaping classifier as a classic BPF program, run on synthetic packets by a small interpreter:
exemptions win, the most specific destination decides, ports are found past IP options and never
read from fragments, non-IPv4 goes to the default class.
"""

from __future__ import annotations

import struct

import pytest
from unit.injector.cbpf_vm import Packet, ipv4, run

from chaosbus.common.messages import NetemParams, TbfParams
from chaosbus.injector.backends._glue import cbpf
from chaosbus.injector.backends.tcplan import ROOT, Match, Rule, TcPlan, dest, plan

C1, C2, C3 = ROOT | 1, ROOT | 2, ROOT | 3
SRC = "10.0.0.1"


def program(matches: list[Match], default: int = 0, exempt: tuple[str, ...] = ()) -> bytes:
    ex = []
    for text in exempt:
        net, _, port = text.partition(":")
        ex.append(dest(net, int(port) if port else None))
    return cbpf.classifier(matches, default, ex, ROOT)


def test_plain_destinations_pick_their_class_else_default() -> None:
    prog = program([Match(dest("10.0.0.2"), C1), Match(dest("10.0.0.3"), C2)], default=C3)
    assert run(prog, ipv4(SRC, "10.0.0.2")) == C1
    assert run(prog, ipv4(SRC, "10.0.0.3")) == C2
    assert run(prog, ipv4(SRC, "10.0.0.4")) == C3


def test_no_match_and_no_default_is_zero_unshaped() -> None:
    prog = program([Match(dest("10.0.0.2"), C1)])
    assert run(prog, ipv4(SRC, "10.9.9.9")) == 0


def test_non_ipv4_goes_to_the_default() -> None:
    prog = program([Match(dest("10.0.0.2"), C1)], default=C3)
    assert run(prog, Packet(0x0806, b"\0" * 28)) == C3  # ARP
    assert run(prog, Packet(0x86DD, b"\x60" + b"\0" * 60)) == C3  # IPv6


@pytest.mark.parametrize(
    ("dst", "sport", "dport", "expected"),
    [
        ("10.0.0.2", 5000, 80, C1),  # dst:80
        ("10.0.0.2", 5000, 81, C2),  # dst without port
        ("10.0.0.9", 5000, 80, C3),  # only the /24
        ("10.0.1.9", 5000, 80, 0),
    ],
)
def test_ports_and_prefixes(dst: str, sport: int, dport: int, expected: int) -> None:
    prog = program([Match(dest("10.0.0.2", 80), C1), Match(dest("10.0.0.2"), C2), Match(dest("10.0.0.0/24"), C3)])
    assert run(prog, ipv4(SRC, dst, 6, sport, dport)) == expected


@pytest.mark.parametrize("proto", [6, 17, 132, 33])
def test_ports_of_every_port_protocol(proto: int) -> None:
    prog = program([Match(dest("10.0.0.2", 53), C1)])
    assert run(prog, ipv4(SRC, "10.0.0.2", proto, 1000, 53)) == C1


def test_no_ports_for_icmp_or_fragments() -> None:
    prog = program([Match(dest("10.0.0.2", 53), C1)])
    assert run(prog, ipv4(SRC, "10.0.0.2", 1, 0, 53)) == 0  # icmp: those bytes are not a port
    assert run(prog, ipv4(SRC, "10.0.0.2", 17, 1000, 53, frag_offset=100)) == 0


def test_ports_are_found_past_ip_options() -> None:
    prog = program([Match(dest("10.0.0.2", 443), C1)])
    assert run(prog, ipv4(SRC, "10.0.0.2", 6, 1000, 443, ihl=7)) == C1


def test_exempt_destination_or_source_goes_direct() -> None:
    prog = program([Match(dest("10.0.0.0/8"), C1)], default=C2, exempt=("10.0.0.5:4222", "10.0.0.6"))
    assert run(prog, ipv4(SRC, "10.0.0.5", 6, 40000, 4222)) == ROOT  # to NATS
    assert run(prog, ipv4("10.0.0.5", SRC, 6, 4222, 40000)) == ROOT  # a NATS pod answering
    assert run(prog, ipv4(SRC, "10.0.0.5", 6, 40000, 80)) == C1  # other port: shaped
    assert run(prog, ipv4(SRC, "10.0.0.6", 17, 1, 2)) == ROOT  # whole address
    assert run(prog, ipv4(SRC, "192.168.0.1")) == C2


def test_long_peer_lists_are_chunked_and_still_match() -> None:
    peers = [dest(f"10.{i // 250}.{i % 250}.1") for i in range(1500)]
    prog = program([Match(p, C1) for p in peers])
    assert len(prog) // 8 < 1700  # about one instruction per peer
    for i in (0, 199, 200, 201, 777, 1499):
        assert run(prog, ipv4(SRC, f"10.{i // 250}.{i % 250}.1")) == C1
    assert run(prog, ipv4(SRC, "10.200.0.1")) == 0


def test_too_many_destinations_is_an_error() -> None:
    peers = [Match(dest(f"10.{i // 250}.{i % 250}.1", 80), C1) for i in range(1000)]
    with pytest.raises(cbpf.ProgramTooLarge):
        program(peers)


def test_planned_programs_agree_with_the_plan() -> None:
    delay = NetemParams(latency_ns=1)
    bw = TbfParams(rate=1000, limit=1000, buffer=1000)
    p = plan(
        [
            Rule("a", netem=delay, dests=(dest("10.1.0.0/16"), dest("10.2.3.4", 8080))),
            Rule("b", tbf=bw, dests=(dest("10.1.2.0/24", 8080),)),
            Rule("c", tbf=bw),
        ],
        exempt=[dest("10.1.2.3", 4222)],
    )
    assert isinstance(p, TcPlan)
    prog = cbpf.classifier(p.matches, p.default, p.exempt, ROOT)
    for dst, dport in [
        ("10.1.2.7", 8080),
        ("10.1.2.7", 22),
        ("10.1.9.9", 8080),
        ("10.2.3.4", 8080),
        ("10.2.3.4", 80),
        ("8.8.8.8", 53),
        ("10.1.2.3", 4222),
    ]:
        want = next((m.classid for m in p.matches if m.dest.covers(dest(dst, dport))), p.default)
        if dest("10.1.2.3", 4222).covers(dest(dst, dport)):
            want = ROOT
        assert run(prog, ipv4(SRC, dst, 6, 1234, dport)) == want, (dst, dport)


def test_every_jump_is_forward_and_in_range() -> None:
    prog = program(
        [Match(dest(f"10.0.{i}.0/24"), C1) for i in range(250)] + [Match(dest("10.9.0.1", 1), C2)],
        default=C3,
        exempt=("1.2.3.4:5",),
    )
    insns = [struct.unpack_from("=HBBI", prog, i) for i in range(0, len(prog), 8)]
    for pc, (code, jt, jf, k) in enumerate(insns):
        if code & 0x07 == cbpf.JMP:
            target = pc + 1 + (k if code == cbpf.JMP | cbpf.JA else max(jt, jf))
            assert target < len(insns)
    assert insns[-1][0] == cbpf.RET
