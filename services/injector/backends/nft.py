"""nftables backend: render partition tables as pure text, apply them in a target netns.

Every change is ONE nft transaction, so a table is replaced atomically and never seen half-made:
through libnftables with a context inside the target netns (`libnft`), or, where that cannot be
used (no library, `CHAOSBUS_NFT=spawn`, too many descriptors), `nsexec --net <netns> -- nft -f -`
(native/nsexec)
(argv only, the script on stdin). Each experiment and
selector owns one `inet` table named `chaosbus_*`: tables of different experiments on one pod
compose (a packet is dropped if any table drops it) and are removed independently, and an orphan
sweeper can find them by prefix.

Partition semantics (deliberately unlike Chaos Mesh, which drops replies too): every drop rule
carries `ct direction original`, so a rule only breaks connections initiated in the blocked
direction; connections from the other side and their replies keep working.

Exemptions (our own control traffic: NATS, the API server) are accepted at the top of every chain
of every table, by destination or by source, so no partition can cut them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import re
import shutil
import subprocess
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from chaosbus.common import settings
from chaosbus.common.netns import visit_netns
from chaosbus.injector.backends._glue import libnft, native, nfnl

TABLE_PREFIX = "chaosbus_"
NFT_TIMEOUT_S = 10.0
_TABLE = re.compile(r"^chaosbus_[a-z0-9_]{1,40}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_L4 = "meta l4proto { tcp, udp, sctp, dccp }"  # protocols whose header has ports where `th` reads


class NftError(Exception):
    """nft refused a script or could not run."""


class NetnsGone(NftError):
    """The target network namespace no longer exists (the target is gone)."""


@dataclass(frozen=True)
class Endpoint:
    """An IPv4 network (CIDR text) with an optional remote port."""

    network: str
    port: int | None = None


@dataclass(frozen=True)
class ResolvedRule:
    """One partition rule with every name already resolved to IPv4 networks.

    No peers and no externals means: drop every packet of the chain except on loopback.
    """

    chain: Literal["input", "output"]
    peers: tuple[str, ...] = ()
    external: tuple[Endpoint, ...] = ()
    device: str = ""


def table_name_ok(table: str) -> bool:
    return bool(_TABLE.match(table))


# --- pure rendering -------------------------------------------------------------------------


def render_partition_table(
    table: str, rules: Sequence[ResolvedRule], exempt: Sequence[Endpoint] = (), until: float | None = None
) -> str:
    """Render the `table inet <table> { ... }` block for `rules`, letting `exempt` through. Pure;
    validates every value. With `until` (the fault's deadline, epoch seconds) every drop also
    matches `meta time < until`: the kernel stops dropping at the deadline by itself, whatever
    happens to the injector (a whole second: a fractional deadline is rounded up, and the node
    still deletes the table at the exact deadline).

    Raises:
        ValueError: a bad table name, device, address or port (nothing reaches nft unchecked).
    """
    _check_table(table)
    bound = _time_bound(until)
    sets: list[str] = []
    chains: dict[str, list[str]] = {"output": [], "input": []}
    for i, rule in enumerate(rules):
        rule_sets, lines = _render_rule(f"r{i}", rule, bound)
        sets += rule_sets
        chains[rule.chain] += lines
    accept: list[str] = []
    if exempt and any(chains.values()):
        exempt_sets, accept = _render_exempt(exempt)
        sets += exempt_sets
    body = [*sets]
    for chain, lines in chains.items():
        if lines:
            body.append(_chain(chain, accept + lines))
    return f"table inet {table} {{\n" + "\n".join(body) + "}\n"


def render_dns_redirect_table(table: str, port: int, mark: int, until: float | None = None) -> str:
    """The DNSChaos table: every IPv4 DNS query the pod sends (UDP and TCP port 53, any resolver)
    is redirected to the responder on 127.0.0.1:`port`, except the responder's own (fwmark `mark`).
    With `until`, the redirect carries the deadline as the partition drops do.
    """
    _check_table(table)
    if not 0 < port < 65536 or not 0 < mark < 2**32:
        raise ValueError(f"invalid responder port {port!r} or mark {mark!r}")
    bound = _time_bound(until)
    lines = [
        f"{bound}meta nfproto ipv4 meta mark != {mark:#x} {proto} dport 53 redirect to :{port}"
        for proto in ("udp", "tcp")
    ]
    rules = "".join(f"\t\t{line}\n" for line in lines)
    return (
        f"table inet {table} {{\n\tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n"
        f"{rules}\t}}\n}}\n"
    )


def render_http_redirect_table(table: str, port: int, proxy_port: int, mark: int, until: float | None = None) -> str:
    """The HTTPChaos table: TCP connections to `port` that reach the pod (prerouting: the pod as a
    server) or leave it (output: the pod as a client) are redirected to the proxy on `proxy_port`,
    except the proxy's own upstream connections (fwmark `mark`). IPv4 only. With `until`, the
    redirect carries the deadline as the partition drops do.
    """
    _check_table(table)
    if not 0 < port < 65536 or not 0 < proxy_port < 65536 or not 0 < mark < 2**32:
        raise ValueError(f"invalid port {port!r}, proxy port {proxy_port!r} or mark {mark!r}")
    rule = f"{_time_bound(until)}meta nfproto ipv4 meta mark != {mark:#x} tcp dport {port} redirect to :{proxy_port}"
    chains = "".join(
        f"\tchain {hook} {{\n\t\ttype nat hook {hook} priority -100; policy accept;\n\t\t{rule}\n\t}}\n"
        for hook in ("prerouting", "output")
    )
    return f"table inet {table} {{\n{chains}}}\n"


# `meta time` is an int64 of nanoseconds since the epoch: a later deadline would wrap and make the
# rule match nothing, a fault that silently does nothing.
_META_TIME_END = (2**63 - 1) // 1_000_000_000


def _time_bound(until: float | None) -> str:
    if until is None:
        return ""
    if not math.isfinite(until) or until <= 0 or until >= _META_TIME_END:
        raise ValueError(f"invalid deadline {until!r}")
    return f"meta time < {math.ceil(until)} "


def _render_rule(prefix: str, rule: ResolvedRule, bound: str = "") -> tuple[list[str], list[str]]:
    if rule.chain not in ("input", "output"):
        raise ValueError(f"unknown chain {rule.chain!r}")
    out = rule.chain == "output"
    addr = "ip daddr" if out else "ip saddr"
    # The external's port is the remote one: destination when sending, source when receiving.
    port = "th dport" if out else "th sport"
    iface = _iface_match(rule.device, out)
    plain, ported = _split_networks(rule)
    sets: list[str] = []
    lines: list[str] = []
    if not plain and not ported:
        loopback = "" if rule.device else ('oifname != "lo" ' if out else 'iifname != "lo" ')
        return sets, [f"{bound}{iface}{loopback}ct direction original counter drop"]
    if plain:
        sets.append(_set(f"{prefix}_addr", "ipv4_addr", [_net_text(n) for n in plain]))
        lines.append(f"{bound}{iface}{addr} @{prefix}_addr ct direction original counter drop")
    if ported:
        elements = [f"{_net_text(n)} . {p}" for p, nets in sorted(ported.items()) for n in nets]
        sets.append(_set(f"{prefix}_port", "ipv4_addr . inet_service", elements))
        lines.append(f"{bound}{iface}{_L4} {addr} . {port} @{prefix}_port ct direction original counter drop")
    return sets, lines


def _render_exempt(exempt: Sequence[Endpoint]) -> tuple[list[str], list[str]]:
    plain, ported = _split_networks(ResolvedRule(chain="output", external=tuple(exempt)))
    sets: list[str] = []
    lines: list[str] = []
    if plain:
        sets.append(_set("ex_addr", "ipv4_addr", [_net_text(n) for n in plain]))
        lines += ["ip daddr @ex_addr accept", "ip saddr @ex_addr accept"]
    if ported:
        elements = [f"{_net_text(n)} . {p}" for p, nets in sorted(ported.items()) for n in nets]
        sets.append(_set("ex_port", "ipv4_addr . inet_service", elements))
        lines += [f"{_L4} ip daddr . th dport @ex_port accept", f"{_L4} ip saddr . th sport @ex_port accept"]
    return sets, lines


def _split_networks(
    rule: ResolvedRule,
) -> tuple[list[ipaddress.IPv4Network], dict[int, list[ipaddress.IPv4Network]]]:
    plain = [_network(p) for p in rule.peers]
    by_port: dict[int, list[ipaddress.IPv4Network]] = defaultdict(list)
    for ext in rule.external:
        if ext.port is None:
            plain.append(_network(ext.network))
        else:
            if not 0 < ext.port < 65536:
                raise ValueError(f"invalid port {ext.port!r}")
            by_port[ext.port].append(_network(ext.network))
    # Interval sets reject overlapping elements, so overlaps are merged here.
    return _collapse(plain), {p: _collapse(nets) for p, nets in by_port.items()}


def _network(text: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text, strict=False)
    except ValueError as e:
        raise ValueError(f"not an IPv4 address or network: {text!r}") from e


def _collapse(nets: Iterable[ipaddress.IPv4Network]) -> list[ipaddress.IPv4Network]:
    return list(ipaddress.collapse_addresses(nets))


def _net_text(net: ipaddress.IPv4Network) -> str:
    return str(net.network_address) if net.prefixlen == 32 else str(net)


def _iface_match(device: str, out: bool) -> str:
    if not device:
        return ""
    if not _IFNAME.match(device):
        raise ValueError(f"invalid device name {device!r}")
    return f'{"oifname" if out else "iifname"} "{device}" '


def _set(name: str, kind: str, elements: list[str]) -> str:
    return f"\tset {name} {{\n\t\ttype {kind}\n\t\tflags interval\n\t\telements = {{ {', '.join(elements)} }}\n\t}}\n"


def _chain(hook: str, lines: list[str]) -> str:
    rules = "".join(f"\t\t{line}\n" for line in lines)
    return f"\tchain {hook} {{\n\t\ttype filter hook {hook} priority 0; policy accept;\n{rules}\t}}\n"


def _check_table(table: str) -> None:
    if not table_name_ok(table):
        raise ValueError(f"invalid table name {table!r} (want {_TABLE.pattern})")


# --- effects: nft inside a netns ------------------------------------------------------------


def apply_table(netns_path: str, table: str, script: str) -> None:
    """Replace table `table` in the netns atomically with `script`, by one nft process (for a
    one-off change; the injector goes through its `Tables`)."""
    Tables(None).apply(netns_path, table, script)


def delete_table(netns_path: str, table: str) -> None:
    """Delete table `table` from the netns by one nft process; a missing table is success."""
    Tables(None).delete(netns_path, table)


def list_tables(netns_path: str) -> list[str]:
    """Names of the `inet` tables in the netns (all of them, not only chaosbus ones)."""
    out = _nft(netns_path, ["-j", "list", "tables"], "")
    items = json.loads(out).get("nftables", [])
    return [t["table"]["name"] for t in items if "table" in t and t["table"].get("family") == "inet"]


def probe(contexts: libnft.NftContexts | None = None) -> str | None:
    """None if this node can apply partition tables; otherwise the reason it cannot. Through
    `contexts` (libnftables, no process) where given and usable, else by one nft process.
    """
    if shutil.which("nft") is None:
        return "nft is not installed"
    try:
        native.helper("nsexec")
    except FileNotFoundError as e:
        return str(e)
    sample = render_partition_table(
        f"{TABLE_PREFIX}probe",
        [
            ResolvedRule(chain="output", peers=("192.0.2.1",), external=(Endpoint("198.51.100.0/24", 80),)),
            ResolvedRule(chain="input"),
        ],
    )
    # A check runs the whole transaction through the kernel and then aborts it: a real
    # capability test (ct, concatenated interval sets) that changes nothing.
    script = f"add table inet {TABLE_PREFIX}probe\ndelete table inet {TABLE_PREFIX}probe\n{sample}"
    if contexts is not None:
        try:
            error = contexts.check(script)
        except libnft.Unavailable:
            pass  # spawn instead
        else:
            return None if error is None else f"nft rejected a partition table: {error}"
    try:
        proc = subprocess.run(
            ["nft", "--check", "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nft cannot run: {e}"
    return None if proc.returncode == 0 else f"nft rejected a partition table: {proc.stderr.strip()}"


def open_contexts() -> libnft.NftContexts | None:
    """New libnftables contexts (each `Tables` of a `Backends` has its own), or None where
    transactions must spawn nft (no library, or CHAOSBUS_NFT=spawn)."""
    if settings.current().nft == "spawn":
        return None
    try:
        return libnft.NftContexts()
    except libnft.Unavailable:
        return None


@contextlib.contextmanager
def _libnft_errors(netns_path: str) -> Iterator[None]:
    """libnftables' failures as this module's: a vanished netns is NetnsGone, a refusal NftError."""
    try:
        yield
    except (libnft.NetnsGone, FileNotFoundError) as e:
        raise NetnsGone(f"network namespace {netns_path} is gone") from e
    except libnft.TransactionFailed as e:
        raise NftError(f"nft failed in {netns_path}: {e}") from e


def list_tables_direct(netns_path: str) -> list[str]:
    """`list_tables` without a process: one nfnetlink dump on a socket opened in the netns by a
    visitor thread (about 0.1 ms against 3 ms for nsexec + nft).

    Raises:
        NetnsGone: the netns does not exist.
        NftError: the kernel refused the dump.
    """
    try:
        return visit_netns(netns_path, _list_here)
    except FileNotFoundError as e:
        raise NetnsGone(f"network namespace {netns_path} is gone") from e
    except OSError as e:
        if not os.path.exists(netns_path):
            raise NetnsGone(f"network namespace {netns_path} is gone") from e
        raise NftError(f"cannot list the tables in {netns_path}: {e}") from e


def _list_here() -> list[str]:
    sock = nfnl.open_socket()
    try:
        return nfnl.list_tables(sock)
    finally:
        sock.close()


class Tables:
    """nft table transactions over given libnftables contexts (None: one nft process each), and
    what this node's nftables can do (`cannot`, probed once)."""

    def __init__(self, ctxs: libnft.NftContexts | None) -> None:
        self.contexts = ctxs
        self._probed: tuple[str | None] | None = None
        self._probe_lock = threading.Lock()
        self._listings: dict[tuple[int, int], list[str]] = {}  # netns -> its tables, while shared
        self._sharing = 0
        self._listings_lock = threading.Lock()

    def names(self, netns_path: str) -> list[str]:
        """The `inet` tables of the netns. Within `shared_listings` each netns is listed once for
        every caller: the sweep's three nft-based finders (partition, DNS, HTTP) ask in turn about
        one netns and share one kernel dump. A table made after that listing is found by the next
        sweep; one deleted since is absent already, and deleting it again is success.

        Raises:
            NetnsGone: the netns does not exist.
            NftError: the kernel refused the dump.
        """
        try:
            st = os.stat(netns_path)
        except OSError as e:
            raise NetnsGone(f"network namespace {netns_path} is gone") from e
        key = (st.st_dev, st.st_ino)
        with self._listings_lock:
            seen = self._listings.get(key) if self._sharing else None
        if seen is not None:
            return list(seen)
        names = list_tables_direct(netns_path)
        with self._listings_lock:
            if self._sharing:
                self._listings[key] = names
        return list(names)

    @contextlib.contextmanager
    def shared_listings(self) -> Iterator[None]:
        """While inside, `names` lists each netns once (a sweep); outside, every call asks the
        kernel, and the listings are dropped when the last sharer leaves."""
        with self._listings_lock:
            self._sharing += 1
        try:
            yield
        finally:
            with self._listings_lock:
                self._sharing -= 1
                if not self._sharing:
                    self._listings = {}

    def apply(self, netns_path: str, table: str, script: str) -> None:
        """Replace table `table` in the netns atomically with `script` (a `table inet <table> {}`).

        Raises:
            NetnsGone: the netns does not exist.
            NftError: nft rejected the transaction (nothing changed).
        """
        _check_table(table)
        if not script.startswith(f"table inet {table} {{"):
            raise ValueError(f"script does not define table inet {table}")
        _transaction(netns_path, table, script, keep=True, ctxs=self.contexts)

    def delete(self, netns_path: str, table: str) -> None:
        """Delete table `table` from the netns; a missing table is success.

        Raises:
            NetnsGone: the netns does not exist (its tables went with it).
            NftError: nft failed.
        """
        _check_table(table)
        script = f"add table inet {table}\ndelete table inet {table}\n"
        _transaction(netns_path, table, script, keep=False, ctxs=self.contexts)

    def counters(self, netns_path: str, table: str) -> tuple[int, int]:
        """Packets and bytes the table's rules have counted (its drops), summed over its rules.

        Read through the netns's libnftables context where there is one (about 0.1 ms); spawning
        nsenter + nft costs ~4 ms a table, which at a hundred partitioned targets a node would spend
        a fifth of a core on a 2 s read-back.
        """
        if self.contexts is not None and os.path.exists(netns_path):
            try:
                with _libnft_errors(netns_path):
                    text = self.contexts.list_table(netns_path, table)
            except libnft.Unavailable:
                pass  # spawn instead
            else:
                counts = [(int(p), int(b)) for p, b in _COUNTER.findall(text)]
                return sum(p for p, _ in counts), sum(b for _, b in counts)
        out = _nft(netns_path, ["-j", "list", "table", "inet", table], "")
        packets = octets = 0
        for item in json.loads(out).get("nftables", []):
            for expr in (item.get("rule") or {}).get("expr") or []:
                if isinstance(expr, dict) and isinstance(expr.get("counter"), dict):
                    packets += int(expr["counter"].get("packets", 0))
                    octets += int(expr["counter"].get("bytes", 0))
        return packets, octets

    def cannot(self) -> str | None:
        """None if this node can apply partition tables, else the reason (`probe`, asked once:
        nft either works on this node or it does not). The node injector asks at start
        (`Backends.prepare`): the probe's transaction waits 8-25 ms in the kernel, which a first
        fault would otherwise wait for."""
        with self._probe_lock:
            if self._probed is None:
                self._probed = (probe(self.contexts),)
            return self._probed[0]

    def close(self) -> None:
        if self.contexts is not None:
            self.contexts.close()


_COUNTER = re.compile(r"\bcounter packets (\d+) bytes (\d+)")


def _transaction(netns_path: str, table: str, script: str, *, keep: bool, ctxs: libnft.NftContexts | None) -> None:
    if not os.path.exists(netns_path):
        raise NetnsGone(f"network namespace {netns_path} is gone")
    if ctxs is not None:
        try:
            with _libnft_errors(netns_path):
                if keep:
                    ctxs.apply(netns_path, table, script)
                else:
                    ctxs.delete(netns_path, table)
            return
        except libnft.Unavailable:
            pass  # spawn instead
    if keep:  # `add` makes `delete` safe when the table is absent; all three commit as one transaction
        script = f"add table inet {table}\ndelete table inet {table}\n{script}"
    _nft(netns_path, ["-f", "-"], script)


def _nft(netns_path: str, args: list[str], stdin: str) -> str:
    if not os.path.exists(netns_path):
        raise NetnsGone(f"network namespace {netns_path} is gone")
    try:
        argv = [native.helper("nsexec"), "--net", netns_path, "--", "nft", *args]
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=NFT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        raise NftError(f"nft timed out after {NFT_TIMEOUT_S}s in {netns_path}") from e
    except OSError as e:
        raise NftError(f"cannot run nsexec/nft: {e}") from e
    if proc.returncode != 0:
        if not os.path.exists(netns_path):
            raise NetnsGone(f"network namespace {netns_path} is gone")
        raise NftError(f"nft failed in {netns_path}: {proc.stderr.strip()}")
    return proc.stdout
