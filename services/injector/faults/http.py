"""http: HTTPChaos on one pod, without touching anything in it.

`apply` gives the pod's netns an HTTP proxy (backends/httpproxy: a thread inside the netns, one per
namespace, shared by every HTTPChaos on the pod) with this experiment's rule, then one nft table
per (experiment, selector), named `chaosbus_http_` + 12 hex, that redirects the TCP connections to
the experiment's port, to the pod and from it, to the proxy. The proxy acts on the messages the
rule selects and relays everything else unchanged. The redirect carries the deadline (`meta time
<`), so the kernel sends new connections straight to their destination again at the deadline even
if the injector is dead. `recover` deletes the table first, then the rule; the proxy stops with
its last rule.
"""

from __future__ import annotations

import functools
from typing import Any

from chaosbus.common.messages import FaultSpec, Http, TargetAction
from chaosbus.injector.backends import httpproxy, nft
from chaosbus.injector.backends.httprules import HttpRule
from chaosbus.injector.faults import FaultContext, FaultError, nfttables, redirect, register

TABLE_PREFIX = nfttables.HTTP_PREFIX


def table_name(experiment_uid: str, selector_key: str) -> str:
    return nfttables.table_name(TABLE_PREFIX, experiment_uid, selector_key)


class HttpFault:
    name = "http"
    ends_with_machine = True  # an nft table and a proxy inside this injector: a reboot takes both
    orphans = nfttables.Tables(TABLE_PREFIX)

    def original_state(
        self, experiment_uid: str, action: TargetAction, containers: object = (), backends: object = None
    ) -> dict[str, Any]:
        """HTTPChaos only adds its own table: restoring means that table absent again."""
        return {nfttables.ABSENT: table_name(experiment_uid, action.selector_key)}

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        spec = _http(spec)
        if spec.tls:
            raise FaultError(
                "HTTPChaos tls is not supported by chaosbus (its proxy relays plain HTTP only); nothing was injected",
                retryable=False,
            )
        reason = ctx.backends.nft.cannot()
        if reason is not None:
            raise FaultError(f"HTTPChaos is not possible on this node: {reason}", retryable=False)
        table = table_name(ctx.experiment_uid, ctx.action.selector_key)
        paths = ctx.netns_paths()
        if not paths:
            raise FaultError("target gone: no live container netns for HTTPChaos", retryable=False)
        rule = HttpRule(spec=spec, until=ctx.deadline)
        for path in paths:
            try:
                proxy = ctx.backends.http.ensure(path)
            except OSError as e:
                raise FaultError(f"cannot start the HTTP proxy in {path}: {e}", retryable=True) from e
            proxy.set_rule(table, rule, tuple(c.pid for c in ctx.alive()))
            render = functools.partial(
                nft.render_http_redirect_table, table, spec.port, proxy.port, httpproxy.MARK, ctx.deadline
            )
            redirect.install(ctx, path, table, render, ctx.backends.http.release, "HTTPChaos")
        return f"HTTPChaos on {spec.target.lower()}s to port {spec.port} applied: nft table {table}"

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        table = table_name(ctx.experiment_uid, ctx.action.selector_key)
        if not redirect.remove(ctx, table, ctx.backends.http.release):
            return f"target gone: nft table {table} went with its netns"
        return f"HTTPChaos recovered: nft table {table} removed"


def _http(spec: FaultSpec) -> Http:
    if not isinstance(spec, Http):
        raise FaultError(f"http got a {type(spec).__name__} spec", retryable=False)
    return spec


register(HttpFault())
