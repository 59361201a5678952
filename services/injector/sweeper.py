"""The orphan sweeper: kernel objects and helper processes carrying chaosbus's marks that belong
to no open journal entry are removed (on start, then periodically).

Marks: what each fault module declares as its `orphans` (partition: nftables tables named
`chaosbus_*`; shaping: our tc objects), judged against the original state of that fault's open
journal entries; and helper processes whose environment carries `CHAOSBUS_FAULT_NODE=<node>` and
`CHAOSBUS_FAULT_KEY=<journal key>`.

Scope: by default the network namespaces this node's journal ever recorded (the journal is written
before the kernel is touched, so that is everywhere this injector can have left something); with
`scope="all"`, every network namespace on the machine (a dedicated node: its injector owns them
all; not for machines shared by several injectors, such as test runs in parallel).

State files: what each fault module declares as its `state_files` (iofs: rules, server records,
control sockets), judged against the open entries of that fault, the live processes they name
and the sweep's scope; a file of a live target outside the scope may be another injector's.

Deleting happens under the locks' gate held exclusively, after re-reading the journal: no apply
can sit between its intent and its effect when an object is judged an orphan.

Each sweep logs what it removed and what it could not, and counts both by what they were
(`chaosbus_injector_orphans_removed_total{what}`, `chaosbus_injector_sweep_errors_total{what}`);
its wall time goes to `chaosbus_injector_sweep_seconds`.

Cost: a netns with nothing of ours costs about 0.1 ms, 0.3 ms with a process in it
(docs/benchmarks.md, `sweep.netns`):
its nft tables are listed by one nfnetlink dump shared by the three nft-based finders, its qdiscs
by one rtnetlink dump, its processes come from one /proc scan per sweep, and nothing is spawned
per netns.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from chaosbus.common import logging as cblog
from chaosbus.common.netns import NETNS_RUN_DIR
from chaosbus.injector import executor as ex
from chaosbus.injector import faults
from chaosbus.injector.backends import procs
from chaosbus.injector.backends.kit import Backends, process_backends
from chaosbus.injector.backends.procs import KEY_ENV, NODE_ENV, helper_env
from chaosbus.injector.journal import Entry, Journal, NetnsRef
from chaosbus.injector.locks import Gate
from chaosbus.injector.metrics import InjectorMetrics

log = cblog.get("injector.sweeper")
SCOPES = ("journal", "all")
LOGGED = 20  # items a sweep's log line lists (the counts cover them all)
Runner = Callable[..., Any]
__all__ = [
    "KEY_ENV",
    "NODE_ENV",
    "SCOPES",
    "SweepReport",
    "Sweeper",
    "helper_env",
    "marked_helpers",
    "originals_in",
    "owners_of",
]


@dataclass
class SweepReport:
    netns: int = 0
    removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # what -> how many of them were removed

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


class Sweeper:
    def __init__(
        self,
        journal: Journal,
        gate: Gate,
        node: str,
        *,
        scope: str = "journal",
        run: Runner | None = None,
        registry: dict[str, faults.Fault] | None = None,
        tags: Iterable[str] | None = None,
        backends: Backends | None = None,
        metrics: InjectorMetrics | None = None,
    ) -> None:
        """`tags`: the faults whose orphans are swept (default: every fault that declares some);
        `backends`: the injector's, which orphans are looked for and removed through (default: the
        process's default backends); `metrics`: where removals and errors are counted."""
        if scope not in SCOPES:
            raise ValueError(f"sweep scope must be one of {SCOPES}, got {scope!r}")
        self.journal, self.gate, self.node, self.scope = journal, gate, node, scope
        self.orphans = faults.orphans(registry, tags)
        self.state_files = faults.state_files(registry, tags)
        self.metrics = metrics
        self.backends = backends or process_backends()
        self._run = run  # how blocking calls are run (a thread pool); None: inline (tests)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._run(fn, *args) if self._run is not None else fn(*args)

    async def sweep(self) -> SweepReport:
        report = SweepReport()
        started = time.monotonic()
        spaces = await self._call(self._namespaces)
        report.netns = len(spaces)
        # One /proc scan and one listing of each netns's tables serve this sweep's finders, and no
        # other: a sweep sees what was there when it started.
        with self.backends.netns_procs.shared(), self.backends.nft.shared_listings():
            for ref in spaces:
                await self._sweep_netns(ref, report)
        await self._sweep_helpers(report)
        await self._sweep_files({r.inode for r in spaces}, report)
        if self.metrics is not None:
            self.metrics.sweep_seconds.observe(time.monotonic() - started)
        if report.removed:
            log.warning("orphans removed", node=self.node, counts=report.counts, **_listed("removed", report.removed))
        if report.errors:
            log.warning("orphans not removed", node=self.node, **_listed("errors", report.errors))
        return report

    def _namespaces(self) -> list[NetnsRef]:
        known = self.journal.netns()
        live = [r for r in known if ex.netns_same(r)]
        if len(live) != len(known):
            self.journal.forget_netns([r for r in known if r not in live])
        if self.scope == "all":
            live += _all_namespaces()
        by_inode: dict[int, NetnsRef] = {}
        for r in live:
            by_inode.setdefault(r.inode, r)
        return list(by_inode.values())

    def _find(self, path: str) -> tuple[dict[str, list[str]], tuple[str, str] | None]:
        """Every fault's orphans in the netns, in one call (one hop to a worker thread per netns,
        not one per fault: the hops cost more than the finders); and what could not be read."""
        found: dict[str, list[str]] = {}
        for tag, orphans in self.orphans.items():
            try:
                if items := orphans.find(path, self.backends):
                    found[tag] = items
            except Exception as e:  # an unreadable namespace is reported, the others are swept
                return found, (orphans.what, f"{path}: {e}")
        return found, None

    async def _sweep_netns(self, ref: NetnsRef, report: SweepReport) -> None:
        found, failure = await self._call(self._find, ref.path)
        if failure is not None:
            self._failed(report, *failure)
            return
        if not found:
            return
        async with self.gate.exclusive():
            entries = await self._call(self.journal.open_entries)
            for tag, items in found.items():
                orphans = self.orphans[tag]
                owned = orphans.owned(originals_in(entries, ref.inode, tag))
                if owned is None:
                    continue
                for item in items:
                    if item not in owned:
                        await self._remove(
                            report,
                            orphans.what,
                            f"{orphans.what} {item} in {ref.path}",
                            orphans.remove,
                            ref.path,
                            item,
                            self.backends,
                        )

    async def _remove(self, report: SweepReport, what: str, item: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            await self._call(fn, *args)
        except Exception as e:  # one stubborn object must not stop the sweep
            self._failed(report, what, f"{item}: {e}")
            return
        report.removed.append(item)
        report.count(what)
        if self.metrics is not None:
            self.metrics.orphans_removed.labels(what).inc()

    def _failed(self, report: SweepReport, what: str, error: str) -> None:
        report.errors.append(error)
        if self.metrics is not None:
            self.metrics.sweep_errors.labels(what).inc()

    async def _sweep_helpers(self, report: SweepReport) -> None:
        marked = await self._call(marked_helpers, self.node)
        if not marked:
            return
        async with self.gate.exclusive():
            open_keys = {e.key for e in await self._call(self.journal.open_entries)}
            for pid, key in marked:
                if key not in open_keys:
                    await self._remove(report, "helper process", f"helper process {pid} ({key})", procs.kill_tree, pid)

    async def _sweep_files(self, scope: set[int], report: SweepReport) -> None:
        """The state files no live fault owns; `scope`: the inodes of the namespaces swept."""
        found: dict[str, list[str]] = {}
        entries = await self._call(self.journal.open_entries)
        for tag, files in self.state_files.items():
            try:
                # A first look without the gate: a live fault's files are there all the time, and
                # applies need not wait for a sweep that finds nothing to remove.
                items = await self._call(files.find, self.backends)
                if items and await self._call(files.stale, items, owners_of(entries, tag), scope):
                    found[tag] = items
            except Exception as e:  # an unreadable state directory is reported, the others are swept
                self._failed(report, files.what, f"{files.what}s: {e}")
        if not found:
            return
        async with self.gate.exclusive():
            entries = await self._call(self.journal.open_entries)
            for tag, items in found.items():
                files = self.state_files[tag]
                try:
                    stale = await self._call(files.stale, items, owners_of(entries, tag), scope)
                except Exception as e:
                    self._failed(report, files.what, f"{files.what}s: {e}")
                    continue
                for item in stale:
                    await self._remove(report, files.what, f"{files.what} {item}", files.remove, item, self.backends)


def originals_in(entries: Iterable[Entry], inode: int, tag: str) -> list[dict[str, Any]]:
    """The original state of the open, lasting entries of fault `tag` in the netns `inode`."""
    return [
        e.original
        for e in entries
        if e.is_open
        and e.lasting
        and faults.spec_tag(e.action.fault) == tag
        and any(ns.inode == inode for ns in e.identity.netns)
    ]


def _listed(name: str, items: list[str]) -> dict[str, Any]:
    """The first LOGGED of `items` under `name`, and how many more there were (a sweep after a
    crash of a busy node may remove thousands: the log line stays readable)."""
    out: dict[str, Any] = {name: items[:LOGGED]}
    if len(items) > LOGGED:
        out[f"{name}_not_listed"] = len(items) - LOGGED
    return out


def owners_of(entries: Iterable[Entry], tag: str) -> list[faults.Owner]:
    """The original state of the open, lasting entries of fault `tag`, with their netns inodes."""
    return [
        (frozenset(ns.inode for ns in e.identity.netns), e.original)
        for e in entries
        if e.is_open and e.lasting and faults.spec_tag(e.action.fault) == tag
    ]


def marked_helpers(node: str) -> list[tuple[int, str]]:
    """(pid, journal key) of live processes marked as this node's fault helpers."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        if env.get(NODE_ENV.encode()) == node.encode() and KEY_ENV.encode() in env:
            found.append((int(name), env[KEY_ENV.encode()].decode(errors="replace")))
    return found


def _all_namespaces() -> list[NetnsRef]:
    refs = []
    paths = [os.path.join(NETNS_RUN_DIR, n) for n in _listdir(NETNS_RUN_DIR)]
    paths += [f"/proc/{p}/ns/net" for p in _listdir("/proc") if p.isdigit()]
    for path in paths:
        try:
            refs.append(NetnsRef(path, os.stat(path).st_ino))
        except OSError:
            continue
    return refs


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []
