"""partition: drop the packets of connections initiated towards (output) or from (input) peers.

One nftables table per (experiment, selector) in the target's netns, named `chaosbus_` + 12 hex
of sha1(experiment_uid/selector_key): two experiments on one pod compose as two tables and each
recovers on its own. `apply` renders the whole table and replaces it atomically; `recover`
deletes it. Hostnames in `external` are resolved (IPv4) at apply time, on the node.
See `backends/nft.py` for the `ct direction original` semantics. Our control traffic
(`backends/exemptions.py`) is accepted ahead of every drop. A fault with a deadline carries it
into every drop rule (`meta time <`): the kernel stops dropping at the deadline even if no
chaosbus process is alive to delete the table.
"""

from __future__ import annotations

import functools
import socket
from typing import Any

import msgspec

from chaosbus.common.crd.networkchaos import parse_external
from chaosbus.common.messages import FaultSpec, Partition, PartitionRule, TargetAction
from chaosbus.injector.backends import nft
from chaosbus.injector.faults import FaultContext, FaultError, nfttables, register


def table_name(experiment_uid: str, selector_key: str) -> str:
    return nfttables.table_name(nft.TABLE_PREFIX, experiment_uid, selector_key)


def resolve_rules(spec: Partition) -> list[nft.ResolvedRule]:
    """The spec's rules with every `external` entry parsed and hostnames resolved to IPv4.

    Raises:
        FaultError: an unparsable entry (not retryable) or an unresolvable name (retryable).
    """
    return [
        nft.ResolvedRule(chain=rule.chain, peers=tuple(rule.peers), external=_endpoints(rule), device=spec.device)
        for rule in spec.rules
    ]


def _endpoints(rule: PartitionRule) -> tuple[nft.Endpoint, ...]:
    out: list[nft.Endpoint] = []
    for text in rule.external:
        ext = parse_external(text)
        if ext is None:
            raise FaultError(f"invalid external target {text!r}", retryable=False)
        if ext.network:
            out.append(nft.Endpoint(ext.network, ext.port))
        else:
            out += [nft.Endpoint(f"{addr}/32", ext.port) for addr in _resolve(ext.hostname)]
    return tuple(out)


def _resolve(hostname: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(hostname, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except OSError as e:
        raise FaultError(f"cannot resolve external target {hostname!r}: {e}", retryable=True) from e
    return sorted({str(info[4][0]) for info in infos})


ABSENT = nfttables.ABSENT
OTHER_TABLE_PREFIXES = (nfttables.DNS_PREFIX, nfttables.HTTP_PREFIX)


class PartitionFault:
    name = "partition"
    batched = True  # one nft transaction (libnftables or raw nfnetlink) per target, no process
    ends_with_machine = True  # a table in the target's netns: a reboot takes it
    orphans = nfttables.Tables(nft.TABLE_PREFIX, excluding=OTHER_TABLE_PREFIXES)

    def original_state(
        self, experiment_uid: str, action: TargetAction, containers: object = (), backends: object = None
    ) -> dict[str, Any]:
        """A partition only ever adds its own table: restoring means that table absent again."""
        return {ABSENT: table_name(experiment_uid, action.selector_key)}

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        spec = _partition(spec)
        reason = ctx.backends.nft.cannot()
        if reason is not None:
            raise FaultError(f"partition is not possible on this node: {reason}", retryable=False)
        table = table_name(ctx.experiment_uid, ctx.action.selector_key)
        try:
            script = _script(table, msgspec.json.encode(spec), ctx.backends.exempt.endpoints(), ctx.deadline)
        except ValueError as e:
            raise FaultError(f"invalid partition: {e}", retryable=False) from e
        paths = ctx.netns_paths()
        if not paths:
            raise FaultError("target gone: no live container netns to partition", retryable=False)
        for path in paths:
            try:
                ctx.backends.nft.apply(path, table, script)
            except nft.NetnsGone as e:
                raise FaultError(f"target gone: {e}", retryable=False) from e
            except nft.NftError as e:
                raise FaultError(str(e), retryable=True) from e
        return f"partition applied: nft table {table}, {len(spec.rules)} rule(s)"

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        table = table_name(ctx.experiment_uid, ctx.action.selector_key)
        removed = 0
        for path in ctx.netns_paths():
            try:
                ctx.backends.nft.delete(path, table)
                removed += 1
            except nft.NetnsGone:
                continue  # its tables died with it
            except nft.NftError as e:
                raise FaultError(str(e), retryable=True) from e
        if not removed:
            return f"target gone: nft table {table} went with its netns"
        return f"partition recovered: nft table {table} removed"


@functools.lru_cache(maxsize=256)
def _script(table: str, spec_json: bytes, exempt: tuple[tuple[str, int | None], ...], until: float | None) -> str:
    """The table's script, rendered once for every target of one experiment on this node (they
    share table name, rules, exemptions and deadline; hostnames resolve once per experiment).
    """
    spec = msgspec.json.decode(spec_json, type=Partition)
    endpoints = [nft.Endpoint(net, port) for net, port in exempt]
    return nft.render_partition_table(table, resolve_rules(spec), endpoints, until=until)


def _partition(spec: FaultSpec) -> Partition:
    if not isinstance(spec, Partition):
        raise FaultError(f"partition got a {type(spec).__name__} spec", retryable=False)
    return spec


register(PartitionFault())
