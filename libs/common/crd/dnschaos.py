"""DNSChaos: Chaos Mesh's `error` and `random` on the names matching `patterns`, plus chaosbus's
`static` (answer with `addresses`)."""

from __future__ import annotations

import ipaddress
import re
from typing import Self

from chaosbus.common.crd.common import ContainerSelectorBase, with_default_namespace
from chaosbus.common.crd.errors import Problems

ACTIONS = ("error", "random", "static")
# What one responder matches per query: every pattern is tried on every suffix of the name.
MAX_PATTERNS = 64
MAX_ADDRESSES = 32
MAX_NAME = 253  # a DNS name's longest text form
# Chaos Mesh's syntax: letters, digits, '-', '.', '?' anywhere and '*' only at the end.
_PATTERN = re.compile(r"^[A-Za-z0-9_?.-]+\*?$|^\*$")


class DNSChaosSpec(ContainerSelectorBase, kw_only=True):
    action: str = ""
    patterns: list[str] = []
    addresses: list[str] = []  # chaosbus extension: the answers of action static

    def validate(self) -> None:
        problems = Problems()
        problems.one_of("spec.action", self.action, ACTIONS)
        self.check_common(problems)
        if len(self.patterns) > MAX_PATTERNS:
            problems.add("spec.patterns", f"at most {MAX_PATTERNS} patterns, got {len(self.patterns)}")
        for i, p in enumerate(self.patterns[:MAX_PATTERNS]):
            if len(p) > MAX_NAME or not _PATTERN.match(p):
                problems.add(
                    f"spec.patterns[{i}]",
                    "expected a domain name with '?' anywhere and '*' only at the "
                    f"end, at most {MAX_NAME} characters, got {p[:80]!r}",
                )
        if len(self.addresses) > MAX_ADDRESSES:
            problems.add("spec.addresses", f"at most {MAX_ADDRESSES} addresses, got {len(self.addresses)}")
        for i, a in enumerate(self.addresses[:MAX_ADDRESSES]):
            try:
                ipaddress.ip_address(a)
            except ValueError:
                problems.add(f"spec.addresses[{i}]", f"expected an IPv4 or IPv6 address, got {a[:80]!r}")
        if self.action == "static" and not self.addresses:
            problems.add("spec.addresses", "action static needs at least one address")
        if self.action != "static" and self.addresses:
            problems.add("spec.addresses", "only action static (a chaosbus extension) uses addresses")
        problems.raise_if_any()

    def defaulted(self, namespace: str) -> Self:
        return with_default_namespace(self, namespace)  # type: ignore[return-value]
