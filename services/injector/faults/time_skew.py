"""time-skew (TimeChaos): shift the clocks every process of the target reads through its vDSO.

Before anything is patched, `original_state` journals each process of the selected containers
(the container's process and its descendants): pid, start time, and the address and original bytes
of each vDSO entry (`timeskew plan`). `apply` patches them (`timeskew inject`, every thread stopped
for the few milliseconds it takes) with the offset, the selected clocks and the fault's deadline,
so the skew ends at the deadline even with no chaosbus process left. `recover` writes the
journaled bytes back; a process that exited, or whose pid now names another process (another
start time), is recovered. Processes started after the apply are not reached (nor in Chaos Mesh).
"""

from __future__ import annotations

import os
from typing import Any

import psutil

from chaosbus.common import logging as cblog
from chaosbus.common.crd.timechaos import CLOCK_IDS
from chaosbus.common.messages import FaultSpec, TargetAction
from chaosbus.common.messages import TimeSkew as TimeSkewSpec
from chaosbus.injector.backends import timeskew
from chaosbus.injector.backends.kit import Backends
from chaosbus.injector.faults import FaultContext, FaultError, register
from chaosbus.injector.runtime import ContainerHandle

MAX_PROCESSES = 1024  # per target; a container with more is refused rather than stopped for seconds
log = cblog.get("injector.time-skew")


def container_processes(containers: list[ContainerHandle]) -> list[int]:
    """The live processes of the containers: each container's process and its descendants, never
    the injector itself or its ancestors."""
    me = psutil.Process()
    protected = {me.pid, *(p.pid for p in me.parents())}
    pids: dict[int, None] = {}
    for c in containers:
        if not c.alive or c.pid <= 1:
            continue
        try:
            root = psutil.Process(c.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in tree:
            if p.pid not in protected:
                pids.setdefault(p.pid, None)
    return list(pids)


def _own_originals() -> tuple[timeskew.Patch, ...] | None:
    """The injector's own (never patched) vDSO entries: the kernel maps the same image into every
    64-bit process, so these are the original bytes of a process another skew has patched."""
    try:
        return timeskew.plan(os.getpid())
    except timeskew.TimeSkewError:
        return None


def _clock_names(mask: int) -> str:
    return ",".join(name for name, n in CLOCK_IDS.items() if mask >> n & 1) or "no clock"


def _offset(ns: int) -> str:
    sign = "-" if ns < 0 else "+"
    return f"{sign}{abs(ns) / 1e9:g}s"


class SkewedProcesses:
    """Processes in a network namespace whose vDSO is patched by timeskew, for the orphan sweeper:
    a skew no open journal entry owns (its entry lost, or a recovery that could not finish) is
    restored. Read without stopping anything: the kernel maps one vDSO image into every 64-bit
    process, so the entries sit at the same offsets from its base as in the injector's own, and the
    injector's own bytes are the originals. Items are "pid:start".
    """

    what = "time skew"

    def __init__(self) -> None:
        self._known: tuple[list[int], list[bytes]] | None = None

    def _layout(self) -> tuple[list[int], list[bytes]] | None:
        """The vDSO entries' offsets and original bytes, read from the injector itself once (a
        timeskew process): the kernel's vDSO image does not change while it runs, and the injector
        is never skewed. A failed read is tried again next time."""
        if self._known is not None:
            return self._known
        own = _own_originals()
        base = timeskew.vdso_base(os.getpid())
        if own is None or base is None:
            return None
        self._known = [p.address - base for p in own], [p.original for p in own]
        return self._known

    def find(self, netns_path: str, backends: Backends) -> list[str]:
        pids = backends.netns_procs.pids_in(os.stat(netns_path).st_ino)
        if not pids:
            return []  # the usual netns of an ended pod: nothing to read, not even our own layout
        layout = self._layout()
        if layout is None:
            return []
        offsets, originals = layout
        found = []
        for pid in pids:
            try:
                base = timeskew.vdso_base(pid)
                if base is None:
                    continue
                spans = [(base + off, len(orig)) for off, orig in zip(offsets, originals, strict=True)]
                if not any(timeskew.looks_patched(b) for b in timeskew.read_many(pid, spans)):
                    continue
                start = timeskew.start_ticks(pid)
                if start is not None:
                    found.append(f"{pid}:{start}")
            except OSError:
                continue  # exited meanwhile
        return found

    def owned(self, originals: list[dict[str, Any]]) -> set[str] | None:
        return {f"{p['pid']}:{p['start']}" for o in originals for p in o.get("processes", [])}

    def remove(self, netns_path: str, item: str, backends: Backends) -> None:
        pid_text, start_text = item.split(":", 1)
        pid = int(pid_text)
        layout = self._layout()
        base = timeskew.vdso_base(pid)
        if layout is None or base is None or timeskew.start_ticks(pid) != int(start_text):
            return  # gone: nothing left to restore
        offsets, originals = layout
        patches = [timeskew.Patch(base + off, orig) for off, orig in zip(offsets, originals, strict=True)]
        try:
            timeskew.restore(pid, patches)
        except timeskew.TimeSkewError as e:
            if not e.gone:
                raise


class TimeSkewFault:
    name = "time-skew"
    orphans = SkewedProcesses()

    def original_state(
        self, experiment_uid: str, action: TargetAction, containers: list[ContainerHandle], backends: Backends
    ) -> dict[str, Any]:
        procs: list[dict[str, Any]] = []
        own: tuple[timeskew.Patch, ...] | None = None
        for pid in container_processes(containers)[:MAX_PROCESSES]:
            start = timeskew.start_ticks(pid)
            if start is None:
                continue
            try:
                patches = timeskew.plan(pid)
            except timeskew.TimeSkewError as e:
                if not e.gone:
                    procs.append({"pid": pid, "start": start, "error": str(e)[:200]})
                continue
            if any(timeskew.looks_patched(p.original) for p in patches):
                own = own or _own_originals()
                if own is None or len(own) != len(patches):
                    procs.append({"pid": pid, "start": start, "error": "already skewed, originals unknown"})
                    continue
                patches = tuple(timeskew.Patch(p.address, o.original) for p, o in zip(patches, own, strict=True))
            procs.append({"pid": pid, "start": start, "patches": [[p.address, p.original.hex()] for p in patches]})
        return {"processes": procs}

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        assert isinstance(spec, TimeSkewSpec)
        procs = ctx.original.get("processes", [])
        deadline_ns = int(ctx.deadline * 1e9) if ctx.deadline else 0
        skewed, already, gone, stopped_us = [], [], 0, 0
        for proc in procs:
            pid = proc["pid"]
            if "error" in proc:
                raise FaultError(f"pid {pid}: {proc['error']}", retryable=False)
            if timeskew.start_ticks(pid) != proc["start"]:
                gone += 1
                continue
            try:
                done = timeskew.inject(pid, spec.offset_ns, spec.clock_mask, deadline_ns)
            except timeskew.TimeSkewError as e:
                if e.gone:
                    gone += 1
                    continue
                if e.already:
                    already.append(pid)
                    continue
                raise FaultError(f"pid {pid}: {e}") from e
            skewed.append(pid)
            stopped_us = max(stopped_us, done.stopped_us)
        if not skewed and not already:
            raise FaultError("target gone: no process to skew", retryable=False)
        log.info("skewed", pids=skewed, already=already, offset_ns=spec.offset_ns, longest_stop_us=stopped_us)
        more = f"; {len(already)} already skewed" if already else ""
        return (
            f"{_clock_names(spec.clock_mask)} {_offset(spec.offset_ns)} in {len(skewed)} processes "
            f"(pids {', '.join(map(str, skewed[:10]))}{' ...' if len(skewed) > 10 else ''}){more}; "
            f"longest stop {stopped_us / 1000:.1f} ms"
        )

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        procs = ctx.original.get("processes", [])
        restored, gone = 0, 0
        for proc in procs:
            pid = proc["pid"]
            if "patches" not in proc or timeskew.start_ticks(pid) != proc["start"]:
                gone += "patches" in proc
                continue
            patches = [timeskew.Patch(int(a), bytes.fromhex(h)) for a, h in proc["patches"]]
            try:
                timeskew.restore(pid, patches)
            except timeskew.TimeSkewError as e:
                if e.gone:
                    gone += 1
                    continue
                raise FaultError(f"pid {pid}: restoring its vDSO: {e}") from e
            restored += 1
        return f"recovered: original vDSO bytes restored in {restored} processes ({gone} exited meanwhile)"


register(TimeSkewFault())
