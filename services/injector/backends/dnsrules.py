"""DNSChaos answers: which queries a pod's experiments take over and what they answer. Pure.

Patterns follow Chaos Mesh: `?` is one character, `*` any run of characters, and a pattern matches
a name or any of its parent-domain suffixes, so a bare domain (`example.com`) matches itself and
its subdomains. No patterns means every name. Answers match Chaos Mesh's k8s_dns_chaos plugin:
`error` is SERVFAIL; `random` answers A with a random IPv4 address and AAAA with a fixed
documentation address (2001:db8::123:12:1), TTL 10, authoritative, and every other type with
SERVFAIL. `static` (a chaosbus extension) answers A and AAAA with the experiment's addresses of that
family and sends other types to the resolver, as a hosts-file override would.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 10
RANDOM_AAAA = "2001:db8::123:12:1"


@dataclass(frozen=True)
class DnsRule:
    """One experiment's rule on a pod."""

    action: str  # error | random | static
    patterns: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    until: float | None = None  # the experiment's deadline (epoch seconds): ignored from then on


def _compile(pattern: str) -> re.Pattern[str]:
    body = "".join("[^.]" if c == "?" else ".*" if c == "*" else re.escape(c) for c in pattern.lower().rstrip("."))
    return re.compile(f"^{body}$")


def matches(patterns: Iterable[str], name: str) -> bool:
    """Whether `name` (with or without the root dot) falls under one of `patterns` (none: every name)."""
    pats = list(patterns)
    if not pats:
        return True
    labels = name.lower().rstrip(".").split(".")
    suffixes = [".".join(labels[i:]) for i in range(len(labels))]
    return any(_compile(p).match(s) for p in pats for s in suffixes)


def rule_for(rules: Iterable[DnsRule], name: str, now: float) -> DnsRule | None:
    """The first live rule that takes over `name`; None: the query goes to its resolver."""
    return next((r for r in rules if (r.until is None or now < r.until) and matches(r.patterns, name)), None)


def answer(
    query: dns.message.Message, rules: Iterable[DnsRule], now: float, rng: random.Random | None = None
) -> dns.message.Message | None:
    """The chaos answer to `query`, or None to forward it unchanged."""
    if len(query.question) != 1:
        return None
    question = query.question[0]
    rule = rule_for(rules, question.name.to_text(), now)
    if rule is None:
        return None
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.RA | dns.flags.AA
    if rule.action == "error":
        reply.set_rcode(dns.rcode.SERVFAIL)
        return reply
    addresses = _addresses(rule, question.rdtype, rng or random.Random())
    if addresses is None:
        if rule.action == "random":
            reply.set_rcode(dns.rcode.SERVFAIL)
            return reply
        return None
    if addresses:
        reply.answer.append(dns.rrset.from_text_list(question.name, TTL, dns.rdataclass.IN, question.rdtype, addresses))
    return reply


def _addresses(rule: DnsRule, rdtype: int, rng: random.Random) -> list[str] | None:
    if rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return None  # only address queries get addresses
    v4 = rdtype == dns.rdatatype.A
    if rule.action == "random":
        return [str(ipaddress.IPv4Address(rng.getrandbits(32)))] if v4 else [RANDOM_AAAA]
    want = 4 if v4 else 6
    return [a for a in rule.addresses if ipaddress.ip_address(a).version == want]
