"""dns: DNSChaos on one pod, without touching any file in it.

`apply` gives the pod's netns a chaos responder (backends/dnsresponder: a thread inside the netns,
one per namespace, shared by every DNSChaos on the pod) with this experiment's rule, then one nft
table per (experiment, selector), named `chaosbus_dns_` + 12 hex, that redirects the pod's DNS
queries (UDP and TCP port 53, IPv4, whatever resolver) to the responder. The responder answers
what a rule takes over and forwards the rest to the resolver the query was addressed to. The
redirect carries the deadline (`meta time <`), so the kernel sends queries straight to their
resolvers again at the deadline even if the injector is dead. `recover` deletes the table first,
then the rule; the responder stops with its last rule.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from typing import Any

from chaosbus.common.messages import Dns, FaultSpec, TargetAction
from chaosbus.injector.backends import dnsresponder, nft
from chaosbus.injector.backends.dnsrules import DnsRule
from chaosbus.injector.faults import FaultContext, FaultError, redirect, register

TABLE_PREFIX = f"{nft.TABLE_PREFIX}dns_"
ABSENT = "nft_table_absent"


def table_name(experiment_uid: str, selector_key: str) -> str:
    digest = hashlib.sha1(f"{experiment_uid}/{selector_key}".encode()).hexdigest()
    return f"{TABLE_PREFIX}{digest[:12]}"


@functools.cache
def _node_cannot() -> str | None:
    return nft.probe()


class Tables:
    """The orphans DNSChaos can leave: its redirect tables, found by their name prefix (a
    responder never outlives the injector process, so it cannot be orphaned).
    """

    what = "nft table"

    def find(self, netns_path: str) -> list[str]:
        return [t for t in nft.list_tables(netns_path) if t.startswith(TABLE_PREFIX)]

    def owned(self, originals: list[dict[str, Any]]) -> set[str] | None:
        return {o[ABSENT] for o in originals if isinstance(o.get(ABSENT), str)}

    def remove(self, netns_path: str, item: str) -> None:
        try:
            nft.delete_table(netns_path, item)
        except nft.NetnsGone:
            pass


class DnsFault:
    name = "dns"
    orphans = Tables()

    def original_state(self, experiment_uid: str, action: TargetAction, containers: object = ()) -> dict[str, Any]:
        """DNSChaos only adds its own table: restoring means that table absent again."""
        return {ABSENT: table_name(experiment_uid, action.selector_key)}

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        spec = _dns(spec)
        reason = _node_cannot()
        if reason is not None:
            raise FaultError(f"DNSChaos is not possible on this node: {reason}", retryable=False)
        for a in spec.addresses:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise FaultError(f"invalid static address {a!r}", retryable=False) from None
        rule = DnsRule(
            action=spec.action, patterns=tuple(spec.patterns), addresses=tuple(spec.addresses), until=ctx.deadline
        )
        table = table_name(ctx.experiment_uid, ctx.action.selector_key)
        paths = ctx.netns_paths()
        if not paths:
            raise FaultError("target gone: no live container netns for DNSChaos", retryable=False)
        for path in paths:
            try:
                responder = dnsresponder.ensure(path)
            except OSError as e:
                raise FaultError(f"cannot start the DNS responder in {path}: {e}", retryable=True) from e
            responder.set_rule(table, rule, tuple(c.pid for c in ctx.alive()))
            render = functools.partial(
                nft.render_dns_redirect_table, table, responder.port, dnsresponder.MARK, ctx.deadline
            )
            redirect.install(path, table, render, dnsresponder.release, "DNSChaos")
        return f"DNSChaos {spec.action} applied: nft table {table}, {len(spec.patterns) or 'every'} pattern(s)"

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        table = table_name(ctx.experiment_uid, ctx.action.selector_key)
        if not redirect.remove(ctx, table, dnsresponder.release):
            return f"target gone: nft table {table} went with its netns"
        return f"DNSChaos recovered: nft table {table} removed"


def _dns(spec: FaultSpec) -> Dns:
    if not isinstance(spec, Dns):
        raise FaultError(f"dns got a {type(spec).__name__} spec", retryable=False)
    return spec


register(DnsFault())
