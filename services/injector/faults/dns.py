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
import ipaddress
from typing import Any

from chaosbus.common.messages import Dns, FaultSpec, TargetAction
from chaosbus.injector.backends import dnsresponder, nft
from chaosbus.injector.backends.dnsrules import DnsRule
from chaosbus.injector.faults import FaultContext, FaultError, nfttables, redirect, register

TABLE_PREFIX = nfttables.DNS_PREFIX


def table_name(experiment_uid: str, selector_key: str) -> str:
    return nfttables.table_name(TABLE_PREFIX, experiment_uid, selector_key)


class DnsFault:
    name = "dns"
    ends_with_machine = True  # an nft table and a responder inside this injector: a reboot takes both
    orphans = nfttables.Tables(TABLE_PREFIX)

    def original_state(
        self, experiment_uid: str, action: TargetAction, containers: object = (), backends: object = None
    ) -> dict[str, Any]:
        """DNSChaos only adds its own table: restoring means that table absent again."""
        return {nfttables.ABSENT: table_name(experiment_uid, action.selector_key)}

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        spec = _dns(spec)
        reason = ctx.backends.nft.cannot()
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
                responder = ctx.backends.dns.ensure(path)
            except OSError as e:
                raise FaultError(f"cannot start the DNS responder in {path}: {e}", retryable=True) from e
            responder.set_rule(table, rule, tuple(c.pid for c in ctx.alive()))
            render = functools.partial(
                nft.render_dns_redirect_table, table, responder.port, dnsresponder.MARK, ctx.deadline
            )
            redirect.install(ctx, path, table, render, ctx.backends.dns.release, "DNSChaos")
        return f"DNSChaos {spec.action} applied: nft table {table}, {len(spec.patterns) or 'every'} pattern(s)"

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        table = table_name(ctx.experiment_uid, ctx.action.selector_key)
        if not redirect.remove(ctx, table, ctx.backends.dns.release):
            return f"target gone: nft table {table} went with its netns"
        return f"DNSChaos recovered: nft table {table} removed"


def _dns(spec: FaultSpec) -> Dns:
    if not isinstance(spec, Dns):
        raise FaultError(f"dns got a {type(spec).__name__} spec", retryable=False)
    return spec


register(DnsFault())
