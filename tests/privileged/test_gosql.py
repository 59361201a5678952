"""GolangChaos's backend and fault against real Go programs (native/tests/sqlloop.go, built here):
real ptrace, real code patches read back from /proc/<pid>/mem, the program's own query results."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.gotargets import SOURCES, QueryLog, failing, go_binary, sqlloop_argv, succeeding, why_no_go

from chaosbus.common.messages import GoSqlError, TargetAction
from chaosbus.injector.backends import gosql, timeskew
from chaosbus.injector.backends.kit import process_backends
from chaosbus.injector.faults import FaultContext, FaultError
from chaosbus.injector.faults.go_sql_error import GoSqlErrorFault
from chaosbus.injector.runtime import ContainerHandle


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ptrace of other processes)"
    if not (gosql.native_dir() / "codepatch").exists():
        return f"{gosql.native_dir()}/codepatch is not built (make install builds native/)"
    return why_no_go()


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


class GoTarget(QueryLog):
    def __init__(self, goroutines: int = 3, *, binary: Path | None = None, own_netns: bool = False) -> None:
        super().__init__()
        argv = sqlloop_argv(goroutines, 10)
        if binary is not None:
            argv[0] = str(binary)  # another build of the program
        prefix = ["unshare", "--net"] if own_netns else []  # unshare execs the program: same pid
        self.proc = subprocess.Popen([*prefix, *argv], stdout=subprocess.PIPE, text=True, bufsize=1)
        self.follow_pipe(self.proc)
        self.wait(succeeding, since=0, timeout=30)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.stop()
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def targets() -> Iterator[list[GoTarget]]:
    started: list[GoTarget] = []
    yield started
    for t in started:
        t.kill()


def both_calls_fail(log: QueryLog, since: int) -> None:
    hits = log.wait(failing, since=since, count=6)
    assert {r.call for r in hits} == {"query", "querycontext"}
    assert {r.text for r in hits} == {gosql.MESSAGE}


def in_memory(pid: int, plan: gosql.Plan) -> bool:
    return all(gosql.read_bytes(pid, s.address, len(s.original)) == s.original for s in plan.sites)


def test_queries_fail_during_and_succeed_after_restore_other_program_untouched(targets: list[GoTarget]) -> None:
    t, bystander = GoTarget(), GoTarget()
    targets += [t, bystander]
    plan = gosql.plan(t.pid)
    assert plan.sites[0].name == "database/sql.(*DB).QueryContext" and plan.cave is not None

    mark, other = t.mark(), bystander.mark()
    done = gosql.inject(plan)
    assert done.page == plan.cave[0]  # no remote mmap: the payload sits in the headers' padding
    both_calls_fail(t, mark)
    assert all(r.ok for r in bystander.since(other)) and bystander.since(other)
    assert gosql.plan(t.pid).already

    gosql.restore(t.pid, [(s.address, s.original) for s in plan.sites])
    assert in_memory(t.pid, plan)
    after = t.mark()
    t.wait(succeeding, since=after, count=6)
    t.wait(succeeding, count=6)  # and no failure once the first success came
    assert all(r.ok for r in t.since(after)[-6:])
    assert t.alive() and bystander.alive()


def test_the_deadline_in_the_patch_ends_the_errors_with_nothing_restored(targets: list[GoTarget]) -> None:
    t = GoTarget()
    targets.append(t)
    plan = gosql.plan(t.pid)
    mark = t.mark()
    gosql.inject(plan, int(time.time()) + 2)
    both_calls_fail(t, mark)
    ok = t.wait(succeeding, since=t.mark(), timeout=20)[0]
    assert ok.at_ns >= (int(time.time()) - 20) * 10**9
    assert not in_memory(t.pid, plan)  # still redirected, passing through to the real function
    t.wait(lambda r: r.ok and r.call == "querycontext", count=4)
    gosql.restore(t.pid, [(s.address, s.original) for s in plan.sites])
    assert t.alive()


def test_kill9_of_the_helper_at_any_moment_leaves_the_program_running(targets: list[GoTarget]) -> None:
    t = GoTarget(goroutines=4)
    targets.append(t)
    plan = gosql.plan(t.pid)
    originals = [(s.address, s.original) for s in plan.sites]
    helper = str(gosql.native_dir() / "codepatch")
    rng = random.Random(7)
    for i in range(12):
        payload = gosql.build_payload([(s.address, s.prologue) for s in plan.sites], plan.itab, gosql.NO_DEADLINE)
        assert plan.cave is not None
        sites = [f"{s.address:x}:{s.original.hex()}:{e}" for s, e in zip(plan.sites, payload.entries, strict=True)]
        argv = (
            [helper, "inject", str(t.pid), payload.code.hex(), "24", f"{plan.cave[0]:x}", *sites]
            if i % 2 == 0
            else [helper, "restore", str(t.pid), *(f"{a:x}:{o.hex()}" for a, o in originals)]
        )
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, 0.004))
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert t.alive()
        if i % 2 == 0:
            gosql.restore(t.pid, originals)
    assert in_memory(t.pid, plan)
    t.wait(succeeding, since=t.mark(), count=8)
    status = open(f"/proc/{t.pid}/status").read()
    assert "\nState:\tS" in status or "\nState:\tR" in status  # never left stopped or traced
    assert "\nTracerPid:\t0\n" in status


def _ctx(pids: list[int], original: dict[str, object], deadline: float | None = None) -> FaultContext:
    handles = [ContainerHandle(f"process://{p}", p, f"/proc/{p}/ns/net", f"/proc/{p}/ns/mnt", True) for p in pids]
    action = TargetAction(target_id="default/go-0/main", op="apply", fault=GoSqlError())
    return FaultContext("uid", "g", "default", action, handles, deadline, original)


def test_the_fault_journals_applies_and_recovers(targets: list[GoTarget]) -> None:
    t = GoTarget()
    targets.append(t)
    fault = GoSqlErrorFault()
    handles = _ctx([t.pid], {}).containers
    original = fault.original_state("uid", _ctx([t.pid], {}).action, handles, process_backends())
    proc = original["processes"][0]
    assert proc["pid"] == t.pid and proc["sites"][0][0] == "database/sql.(*DB).QueryContext"
    ctx = _ctx([t.pid], original, deadline=time.time() + 60)
    mark = t.mark()
    message = fault.apply(ctx, GoSqlError())
    assert message.startswith("set sql query error to default/go-0/main: ")
    both_calls_fail(t, mark)
    assert "restored in 1 processes" in fault.recover(ctx, GoSqlError())
    t.wait(succeeding, since=t.mark(), count=4)
    assert "restored in 1 processes" in fault.recover(ctx, GoSqlError())  # idempotent


def test_a_target_without_go_is_refused_naming_why() -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        fault = GoSqlErrorFault()
        ctx = _ctx([sleeper.pid], {})
        original = fault.original_state("uid", ctx.action, ctx.containers, process_backends())
        with pytest.raises(
            FaultError,
            match=r"no Go program with database/sql in the target \(pid \d+: "
            r"/usr/bin/sleep is not a Go program\)",
        ) as info:
            fault.apply(_ctx([sleeper.pid], original), GoSqlError())
        assert not info.value.retryable
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_sweeper_restores_a_patch_no_journal_entry_owns(targets: list[GoTarget]) -> None:
    t = GoTarget(own_netns=True)
    targets.append(t)
    netns = f"/proc/{t.pid}/ns/net"
    orphans = GoSqlErrorFault.orphans
    assert orphans.find(netns, process_backends()) == []
    plan = gosql.plan(t.pid)
    gosql.inject(plan)
    both_calls_fail(t, t.mark())
    found = orphans.find(netns, process_backends())
    assert found == [f"{t.pid}:{timeskew.start_ticks(t.pid)}"]
    assert orphans.owned([{"processes": [{"pid": t.pid, "start": timeskew.start_ticks(t.pid)}]}]) == set(found)
    orphans.remove(netns, found[0], process_backends())
    assert in_memory(t.pid, plan)
    t.wait(succeeding, since=t.mark(), count=6)
    assert orphans.find(netns, process_backends()) == [] and t.alive()


def test_a_go_program_without_database_sql_is_named_with_the_reason() -> None:
    proc = subprocess.Popen([str(go_binary(SOURCES / "gosleep.go"))], stdout=subprocess.DEVNULL)
    try:
        with pytest.raises(gosql.GoSqlError, match="is a Go program without database/sql") as info:
            gosql.plan(proc.pid)
        assert info.value.unsupported
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    "flags",
    [
        ("-ldflags=-s -w",),  # no symbol table: the pclntab and the itabs' table
        ("-buildmode=pie",),  # loaded at a random address
        ("-buildmode=pie", "-ldflags=-s -w"),  # both (the tables then live in .data.rel.ro)
    ],
)
def test_stripped_and_pie_go_programs_are_patched(targets: list[GoTarget], flags: tuple[str, ...]) -> None:
    t = GoTarget(2, binary=go_binary(SOURCES / "sqlloop.go", *flags))
    targets.append(t)
    info, mapped, _ = gosql.elf_of(t.pid)
    mapped.close()
    assert info.has_symtab is ("-ldflags=-s -w" not in flags)
    plan = gosql.plan(t.pid)
    assert [s.name for s in plan.sites] == ["database/sql.(*DB).QueryContext"]
    gosql.inject(plan)
    both_calls_fail(t, t.mark())  # the error's itab found among the binary's itabs
    gosql.restore(t.pid, [(s.address, s.original) for s in plan.sites])
    t.wait(succeeding, since=t.mark(), count=4)
    assert t.alive()
