"""network-shaping: NetworkChaos delay, loss, duplicate, corrupt, netem (one merged netem qdisc) and
bandwidth (tbf) on the egress of one device of the target's netns, towards the peers and external
targets of this side, or towards everything.

Each (experiment, side) is one rule owner. Every rule on a (netns, device) is planned together
(`tcplan`) and the device converges to that plan (`backends/tc.py`): two experiments on one
pod compose, recovering one leaves the others, and the last one restores the device's original
configuration. `apply` is idempotent for a given owner and spec, so re-applying every journaled
fault after an injector restart rebuilds the same tree.

What the kernel cannot do is refused per target before anything is touched: the tc kinds are
probed once per process (`kernel lacks sch_netem` on a kernel built without netem).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from typing import Any

from chaosbus.common.crd.networkchaos import parse_external
from chaosbus.common.messages import FaultSpec, NetemParams, Shaping, TbfParams
from chaosbus.common.netns import NETNS_RUN_DIR
from chaosbus.injector.backends import exemptions, tc
from chaosbus.injector.backends.kit import Backends
from chaosbus.injector.backends.tcplan import Dest, PlanError, Rule, dest
from chaosbus.injector.faults import FaultContext, FaultError, Owner, register

_PERMANENT = (errno.EINVAL, errno.ERANGE, errno.EOPNOTSUPP, errno.ENOENT, errno.E2BIG)


def needs(spec: Shaping) -> list[str]:
    """The tc kinds a spec needs: htb and cls_bpf always (the tree and its classifier), then its stages."""
    return ["htb", "bpf", *(["netem"] if spec.netem else []), *(["tbf"] if spec.tbf else [])]


def owner(ctx: FaultContext) -> str:
    return f"{ctx.experiment_uid}/{ctx.action.selector_key}"


def exempt_dests(ctx: FaultContext) -> tuple[Dest, ...]:
    return tuple(dest(net, port) for net, port in ctx.backends.exempt.endpoints())


def rule_for(rule_owner: str, spec: Shaping) -> Rule:
    """The spec as a planner rule (peers and externals resolved to IPv4 destinations).

    Raises:
        FaultError: an unparsable external (permanent) or an unresolvable hostname (retryable).
    """
    dests: tuple[Dest, ...] | None = None
    if not spec.unfiltered:
        found = {dest(ip) for ip in spec.peers}
        for text in spec.external:
            ext = parse_external(text)
            if ext is None:
                raise FaultError(f"invalid external target {text!r}", retryable=False)
            if ext.network:
                found.add(dest(ext.network, ext.port))
                continue
            addrs = exemptions.resolve_ipv4(ext.hostname)
            if not addrs:
                raise FaultError(f"cannot resolve external target {ext.hostname!r}", retryable=True)
            found |= {dest(a, ext.port) for a in addrs}
        dests = tuple(sorted(found, key=lambda d: d.sort_key))
    return Rule(owner=rule_owner, netem=spec.netem, tbf=spec.tbf, dests=dests)


def describe(spec: Shaping, rule: Rule) -> str:
    parts = []
    if spec.netem is not None:
        parts.append(f"netem {_netem_text(spec.netem)}")
    if spec.tbf is not None:
        parts.append(f"tbf {_tbf_text(spec.tbf)}")
    where = "every destination" if rule.dests is None else f"{len(rule.dests)} destination(s)"
    return f"{' + '.join(parts)} towards {where}"


class TcObjects:
    """The orphans shaping can leave: our tc objects (handles cb00:-cbff:), by device. Every
    shaping rule on a device shares one tree, so any open shaping fault in the namespace owns them.
    """

    what = "traffic shaping"

    def find(self, netns_path: str, backends: Backends) -> list[str]:
        return tc.devices_with_ours(netns_path)

    def owned(self, originals: list[dict[str, Any]]) -> set[str] | None:
        return None if originals else set()

    def remove(self, netns_path: str, item: str, backends: Backends) -> None:
        tc.remove_ours(netns_path, item)


class OriginalFiles:
    """The original configuration of each shaped device, one file per (netns, device) in the tc
    backend's store, for the sweeper. The tc sweep restores a live namespace's device and drops its
    file itself; a file whose namespace is gone from the machine is stale, and must go: the inode of
    a namespace is reused, and a later recovery in the new one would restore the old device's
    configuration. A temporary file of a write cut short is stale in the sweep's scope too (it is
    never read, and no apply of this injector runs meanwhile)."""

    what = "tc original"

    def find(self, backends: Backends) -> list[str]:
        directory = backends.tc.store.directory
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        return sorted(str(directory / n) for n in names if _netns_of(n) is not None)

    def stale(self, items: list[str], owners: list[Owner], scope: set[int]) -> list[str]:
        live = _live_netns()
        out = []
        for item in items:
            key = _netns_of(os.path.basename(item))
            if key is not None and (key not in live or (item.endswith(".tmp") and key[1] in scope)):
                out.append(item)
        return out

    def remove(self, item: str, backends: Backends) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(item)


def _netns_of(name: str) -> tuple[int, int] | None:
    """(device, inode) of the namespace a store file names (`<dev hex>-<inode>-<device>.json`)."""
    stem, _, suffix = name.rpartition(".")
    parts = stem.split("-", 2)
    if suffix not in ("json", "tmp") or len(parts) != 3 or not parts[1].isdigit():
        return None
    try:
        return int(parts[0], 16), int(parts[1])
    except ValueError:
        return None


def _live_netns() -> set[tuple[int, int]]:
    """(device, inode) of every network namespace a process is in or a name pins, as of now."""
    paths = [f"/proc/{p}/ns/net" for p in os.listdir("/proc") if p.isdigit()]
    with contextlib.suppress(OSError):
        paths += [os.path.join(NETNS_RUN_DIR, n) for n in os.listdir(NETNS_RUN_DIR)]
    found = set()
    for path in paths:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            found.add((st.st_dev, st.st_ino))
    return found


class ShapingFault:
    name = "network-shaping"
    ends_with_machine = True  # qdiscs in the target's netns: a reboot takes them
    orphans = TcObjects()
    state_files = OriginalFiles()

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        spec = _shaping(spec)
        if spec.netem is None and spec.tbf is None:
            return f"{spec.action}: nothing to shape on this side"
        lacking = [reason for kind in needs(spec) if (reason := ctx.backends.tc.capabilities().get(kind))]
        if lacking:
            raise FaultError(f"{spec.action} is not possible on this node: {'; '.join(lacking)}", retryable=False)
        rule = rule_for(owner(ctx), spec)
        paths = ctx.netns_paths()
        if not paths:
            raise FaultError("target gone: no live container netns to shape", retryable=False)
        devices = []
        for path in paths:
            with _errors():
                outcome = ctx.backends.tc.set_rule(
                    path, spec.device, spec.pod_ip, rule, ctx.action.target_id, exempt_dests(ctx)
                )
            devices.append(outcome.device)
        return f"{spec.action} applied on {', '.join(devices)}: {describe(spec, rule)}"

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        spec = _shaping(spec)
        if spec.netem is None and spec.tbf is None:
            return f"{spec.action}: nothing was shaped on this side"
        paths = ctx.netns_paths()
        if not paths:
            ctx.backends.tc.forget(owner(ctx), ctx.action.target_id)
            return "target gone: its shaping went with its netns"
        notes = []
        for path in paths:
            try:
                with _errors():
                    outcomes = ctx.backends.tc.drop_rule(path, owner(ctx), exempt_dests(ctx))
            except FaultError as e:
                if e.message.startswith("target gone"):
                    ctx.backends.tc.forget(owner(ctx), ctx.action.target_id)
                    continue
                raise
            for o in outcomes:
                left = (
                    "original configuration restored"
                    if o.plan is None
                    else f"{len(o.plan.classes)} shaping class(es) of other experiments left in force"
                )
                notes.append(f"{o.device}: {o.note or left}")
        return f"{spec.action} recovered" + (f" ({'; '.join(notes)})" if notes else ": nothing was left")


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Backend failures as FaultErrors: gone targets and impossible rules are permanent."""
    try:
        yield
    except tc.NetnsGone as e:
        raise FaultError(f"target gone: {e}", retryable=False) from e
    except tc.DeviceMissing as e:
        raise FaultError(str(e), retryable=False) from e
    except tc.TcError as e:
        raise FaultError(str(e), retryable=e.code not in _PERMANENT) from e
    except (PlanError, tc.ProgramTooLarge) as e:
        raise FaultError(f"cannot shape this: {e}", retryable=False) from e


def _shaping(spec: FaultSpec) -> Shaping:
    if not isinstance(spec, Shaping):
        raise FaultError(f"network-shaping got a {type(spec).__name__} spec", retryable=False)
    return spec


def _netem_text(p: NetemParams) -> str:
    bits = []
    if p.latency_ns or p.jitter_ns:
        bits.append(f"delay {p.latency_ns / 1e6:g}ms" + (f" ±{p.jitter_ns / 1e6:g}ms" if p.jitter_ns else ""))
    if p.reorder:
        bits.append(f"reorder {p.reorder:g}% gap {p.gap}")
    bits += [
        f"{name} {value:g}%"
        for name, value in (("loss", p.loss), ("duplicate", p.duplicate), ("corrupt", p.corrupt))
        if value
    ]
    if p.rate:
        bits.append(f"rate {p.rate * 8:,} bit/s")
    return " ".join(bits) or "(no change)"


def _tbf_text(p: TbfParams) -> str:
    peak = f" peakrate {p.peakrate * 8:,} bit/s minburst {p.minburst}" if p.peakrate else ""
    return f"rate {p.rate * 8:,} bit/s limit {p.limit} buffer {p.buffer}{peak}"


register(ShapingFault())
