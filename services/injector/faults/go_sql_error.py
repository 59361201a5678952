"""go-sql-error (GolangChaos sql-error): `(*DB).Query` and `(*DB).QueryContext` of every Go
program in the target return `(nil, error)` with the message `gosql.MESSAGE`.

Before anything is patched, `original_state` journals each process of the selected containers
(the container's process and its descendants): pid, start time, and for each Go program with
database/sql the address and original bytes of each function entry and the itab of the error
(`gosql.plan`), or why the process cannot be patched. `apply` redirects them (`codepatch inject`,
every thread stopped for the fraction of a millisecond it takes) with the fault's deadline in the
stub, so the queries work again at the deadline even with no chaosbus process left. `recover`
writes the journaled bytes back; a process that exited, or whose pid now names another process
(another start time), is recovered. Processes started after the apply are not reached.

A target with no Go program using database/sql is a failure naming each process and why.
"""

from __future__ import annotations

import math
import os
from typing import Any

from chaosbus.common import logging as cblog
from chaosbus.common.messages import FaultSpec, TargetAction
from chaosbus.injector.backends import gosql
from chaosbus.injector.backends.kit import Backends
from chaosbus.injector.backends.timeskew import start_ticks
from chaosbus.injector.faults import FaultContext, FaultError, register
from chaosbus.injector.faults.time_skew import MAX_PROCESSES, container_processes
from chaosbus.injector.runtime import ContainerHandle

log = cblog.get("injector.go-sql-error")


def _journaled(plan: gosql.Plan) -> dict[str, Any]:
    return {
        "exe": plan.exe,
        "itab": plan.itab,
        "already": plan.already,
        "cave": list(plan.cave or ()),
        "sites": [[s.name, s.address, s.original.hex(), s.prologue.hex()] for s in plan.sites],
    }


def _plan_of(proc: dict[str, Any]) -> gosql.Plan:
    sites = tuple(
        gosql.Site(name, int(addr), bytes.fromhex(orig), bytes.fromhex(pro)) for name, addr, orig, pro in proc["sites"]
    )
    cave = proc.get("cave") or []
    return gosql.Plan(
        proc["pid"],
        proc["exe"],
        int(proc["itab"]),
        sites,
        bool(proc.get("already")),
        (int(cave[0]), int(cave[1])) if len(cave) == 2 else None,
    )


def _pids(pids: list[int]) -> str:
    return ", ".join(map(str, pids[:10])) + (" ..." if len(pids) > 10 else "")


class PatchedPrograms:
    """Go programs in a network namespace whose database/sql functions are redirected by
    codepatch, for the orphan sweeper: a patch no open journal entry owns (its entry lost, or a
    recovery that could not finish) is restored. Read without stopping anything; the original bytes
    are the program's own binary's. Items are "pid:start".
    """

    what = "go sql error"

    def find(self, netns_path: str, backends: Backends) -> list[str]:
        found = []
        for pid in backends.netns_procs.pids_in(os.stat(netns_path).st_ino):
            try:
                plan = gosql.plan(pid, backends.elf)
            except (gosql.GoSqlError, OSError):
                continue  # not a Go program with database/sql, or exited meanwhile
            start = start_ticks(pid)
            if plan.already and start is not None:
                found.append(f"{pid}:{start}")
        return found

    def owned(self, originals: list[dict[str, Any]]) -> set[str] | None:
        return {f"{p['pid']}:{p['start']}" for o in originals for p in o.get("processes", [])}

    def remove(self, netns_path: str, item: str, backends: Backends) -> None:
        pid_text, start_text = item.split(":", 1)
        pid = int(pid_text)
        try:
            plan = gosql.plan(pid, backends.elf)
            if start_ticks(pid) != int(start_text):
                return  # gone: nothing left to restore
            gosql.restore(pid, [(s.address, s.original) for s in plan.sites])
        except gosql.GoSqlError as e:
            if not e.gone:
                raise


class GoSqlErrorFault:
    name = "go-sql-error"
    orphans = PatchedPrograms()

    def original_state(
        self, experiment_uid: str, action: TargetAction, containers: list[ContainerHandle], backends: Backends
    ) -> dict[str, Any]:
        procs: list[dict[str, Any]] = []
        for pid in container_processes(containers)[:MAX_PROCESSES]:
            start = start_ticks(pid)
            if start is None:
                continue
            try:
                plan = gosql.plan(pid, backends.elf)
            except gosql.GoSqlError as e:
                if not e.gone:
                    procs.append({"pid": pid, "start": start, "skip": str(e)[:200]})
                continue
            procs.append({"pid": pid, "start": start, **_journaled(plan)})
        return {"processes": procs}

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        procs = ctx.original.get("processes", [])
        deadline_s = math.ceil(ctx.deadline) if ctx.deadline else gosql.NO_DEADLINE
        patched, already, skipped, stopped_us = [], [], [], 0
        for proc in procs:
            pid = proc["pid"]
            if "skip" in proc:
                skipped.append(f"pid {pid}: {proc['skip']}")
                continue
            if start_ticks(pid) != proc["start"]:
                continue
            plan = _plan_of(proc)
            if plan.already:
                already.append(pid)
                continue
            try:
                done = gosql.inject(plan, deadline_s)
            except gosql.GoSqlError as e:
                if e.gone:
                    continue
                if e.changed:
                    already.append(pid)
                    continue
                raise FaultError(f"pid {pid}: {e}", retryable=not e.unsupported) from e
            patched.append(pid)
            stopped_us = max(stopped_us, done.stopped_us)
        if not patched and not already:
            why = "; ".join(skipped[:5]) or "no process left in the target"
            raise FaultError(f"no Go program with database/sql in the target ({why})", retryable=False)
        log.info("sql errors injected", pids=patched, already=already, longest_stop_us=stopped_us)
        more = f"; {len(already)} already patched" if already else ""
        return (
            f"set sql query error to {ctx.action.target_id}: (*DB).Query and (*DB).QueryContext return "
            f"{gosql.MESSAGE!r} in {len(patched)} processes (pids {_pids(patched)}){more}; "
            f"longest stop {stopped_us / 1000:.1f} ms"
        )

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        procs = ctx.original.get("processes", [])
        restored, gone = 0, 0
        for proc in procs:
            pid = proc["pid"]
            if "sites" not in proc or proc.get("already"):
                continue
            if start_ticks(pid) != proc["start"]:
                gone += 1
                continue
            plan = _plan_of(proc)
            try:
                if all(gosql.read_bytes(pid, s.address, len(s.original)) == s.original for s in plan.sites):
                    restored += 1  # never patched (an apply that did not get this far), or restored
                    continue
                gosql.restore(pid, [(s.address, s.original) for s in plan.sites])
            except (FileNotFoundError, ProcessLookupError):
                gone += 1
                continue
            except gosql.GoSqlError as e:
                if e.gone:
                    gone += 1
                    continue
                raise FaultError(f"pid {pid}: restoring database/sql: {e}") from e
            restored += 1
        return f"recovered: database/sql restored in {restored} processes ({gone} exited meanwhile)"


register(GoSqlErrorFault())
