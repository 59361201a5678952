"""DNSChaos's pure parts: Chaos Mesh's pattern syntax and answers, the conntrack lookup, the
redirect table, the spec's admission bounds."""

from __future__ import annotations

import random
import struct

import dns.message
import dns.rcode
import pytest

from chaosbus.common.crd.dnschaos import DNSChaosSpec
from chaosbus.common.crd.errors import InvalidObject
from chaosbus.injector.backends import nft
from chaosbus.injector.backends._glue import ctnetlink
from chaosbus.injector.backends.dnsresponder import original_destination
from chaosbus.injector.backends.dnsrules import DnsRule, answer, matches


@pytest.mark.parametrize(
    ("patterns", "name", "hit"),
    [
        ([], "anything.example", True),
        (["google.com"], "google.com.", True),
        (["google.com"], "www.google.com", True),
        (["google.com"], "notgoogle.com", False),
        (["chaos-mesh.*"], "chaos-mesh.org", True),
        (["chaos-mesh.*"], "chaos-mesh.io", True),
        (["chaos-mesh.*"], "chaosmesh.org", False),
        (["github.?om"], "github.com", True),
        (["github.?om"], "github.coom", False),
        (["Example.COM"], "example.com", True),
    ],
)
def test_patterns_follow_chaos_mesh(patterns: list[str], name: str, hit: bool) -> None:
    assert matches(patterns, name) is hit


def query(name: str, rdtype: str) -> dns.message.Message:
    return dns.message.make_query(name, rdtype)


def test_error_is_servfail_and_unmatched_names_are_forwarded() -> None:
    rules = [DnsRule(action="error", patterns=("a.test",))]
    reply = answer(query("x.a.test", "A"), rules, 0.0)
    assert reply is not None and reply.rcode() == dns.rcode.SERVFAIL and not reply.answer
    assert answer(query("b.test", "A"), rules, 0.0) is None


def test_random_answers_like_chaos_mesh() -> None:
    rules = [DnsRule(action="random")]
    a = answer(query("a.test", "A"), rules, 0.0, random.Random(1))
    aaaa = answer(query("a.test", "AAAA"), rules, 0.0)
    assert a is not None and a.answer[0].ttl == 10 and len(a.answer[0]) == 1
    assert aaaa is not None and [r.to_text() for r in aaaa.answer[0]] == ["2001:db8::123:12:1"]
    mx = answer(query("a.test", "MX"), rules, 0.0)
    assert mx is not None and mx.rcode() == dns.rcode.SERVFAIL  # as k8s_dns_chaos: no answer is a failure
    assert answer(query("a.test", "MX"), [DnsRule(action="static", addresses=("192.0.2.1",))], 0.0) is None


def test_static_answers_each_family_with_its_addresses_and_a_rule_ends_at_its_deadline() -> None:
    rules = [DnsRule(action="static", addresses=("192.0.2.1", "2001:db8::1"), until=100.0)]
    a = answer(query("a.test", "A"), rules, 99.0)
    assert a is not None and [r.to_text() for r in a.answer[0]] == ["192.0.2.1"]
    assert answer(query("a.test", "A"), rules, 100.0) is None


CONNTRACK = (
    "ipv4     2 udp      17 29 src=10.1.0.10 dst=10.1.0.13 sport=40001 dport=53 src=127.0.0.1 dst=10.1.0.10 "
    "sport=35000 dport=40001 mark=0 zone=0 use=2\n"
    "ipv4     2 tcp      6 119 TIME_WAIT src=10.1.0.10 dst=10.9.9.9 sport=40001 dport=53 src=127.0.0.1 "
    "dst=10.1.0.10 sport=35000 dport=40001 [ASSURED] mark=0 zone=0 use=2\n"
)


def test_the_original_destination_comes_from_the_reply_tuple() -> None:
    assert original_destination(CONNTRACK, "udp", ("10.1.0.10", 40001), 35000) == ("10.1.0.13", 53)
    assert original_destination(CONNTRACK, "tcp", ("10.1.0.10", 40001), 35000) == ("10.9.9.9", 53)
    assert original_destination(CONNTRACK, "udp", ("10.1.0.10", 40002), 35000) is None


def test_the_redirect_table_carries_the_deadline_and_spares_the_responder() -> None:
    text = nft.render_dns_redirect_table("chaosbus_dns_abc", 35000, 0x10, until=1000.5)
    assert text.count("meta time < 1001 meta nfproto ipv4 meta mark != 0x10") == 2
    assert "udp dport 53 redirect to :35000" in text and "tcp dport 53 redirect to :35000" in text
    with pytest.raises(ValueError):
        nft.render_dns_redirect_table("chaosbus_dns_abc", 0, 0x10)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (DNSChaosSpec(action="drop"), "spec.action"),
        (DNSChaosSpec(action="error", patterns=["chaos-*.org"]), "spec.patterns[0]"),
        (DNSChaosSpec(action="error", patterns=["a.test"] * 65), "spec.patterns"),
        (DNSChaosSpec(action="error", patterns=["a" * 254]), "spec.patterns[0]"),
        (DNSChaosSpec(action="static"), "spec.addresses"),
        (DNSChaosSpec(action="static", addresses=["not-an-ip"]), "spec.addresses[0]"),
        (DNSChaosSpec(action="random", addresses=["192.0.2.1"]), "spec.addresses"),
    ],
)
def test_admission_bounds_every_field(spec: DNSChaosSpec, problem: str) -> None:
    with pytest.raises(InvalidObject) as e:
        spec.validate()
    assert problem in str(e.value)


def test_valid_specs_pass() -> None:
    DNSChaosSpec(action="random", mode="all", patterns=["google.com", "chaos-mesh.*", "github.?om"]).validate()
    DNSChaosSpec(action="static", mode="one", addresses=["192.0.2.1", "2001:db8::1"]).validate()


def test_ctnetlink_request_and_answer_round_trip() -> None:
    req = ctnetlink.get_request("udp", ("127.0.0.1", 35000), ("10.1.0.10", 40001), seq=7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", req, 0)
    assert (length, kind, flags, seq) == (len(req), 0x101, 1, 7)
    # an answer carries the original tuple as attribute 1 where the request had the reply tuple (2)
    orig = ctnetlink.get_request("udp", ("10.1.0.10", 40001), ("10.1.0.13", 53), seq=7)
    body = bytearray(orig[20:])
    struct.pack_into("=H", body, 2, ctnetlink.CTA_TUPLE_ORIG | ctnetlink.NLA_F_NESTED)
    answer_msg = struct.pack("=IHHII", 20 + len(body), 0x100, 0, 7, 0) + struct.pack("=BBH", 2, 0, 0) + bytes(body)
    assert ctnetlink.parse_original_destination(answer_msg) == ("10.1.0.13", 53)
    error = struct.pack("=IHHII", 36, ctnetlink.NLMSG_ERROR, 0, 7, 0) + b"\0" * 20
    assert ctnetlink.parse_original_destination(error) is None
