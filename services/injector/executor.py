"""Journaled execution: every apply is written to the journal (intent, target identity, state to
restore, deadline) BEFORE the fault touches anything, and its outcome after; recoveries find the
target through what the journal kept, so a restarted process or a lost command cannot strand a
fault. Synchronous: the app calls these in worker threads, holding the entries' locks.

A command runs in three steps: `begin` (decide per action, one transaction of intents), `effect`
per action (the faults, in parallel), `finish` (one transaction: new states, the result batch into
the outbox, the command id as handled). Recoveries the node decides on its own go through
`recover_entry` and `commit_recoveries`.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import psutil

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import subjects
from chaosbus.common.netns import netns_inode
from chaosbus.injector import authorize, core, expiry, faults, runtime
from chaosbus.injector.backends.kit import Backends, process_backends
from chaosbus.injector.journal import (
    ACTIVE,
    APPLYING,
    DONE,
    FAILED,
    RECOVERED,
    Change,
    Entry,
    Identity,
    Journal,
    NetnsRef,
    ProcRef,
    Report,
    SignedMark,
    entry_key,
)


@dataclass(frozen=True)
class Plan:
    """What one action of a command will do."""

    action: m.TargetAction
    key: str
    entry: Entry | None  # as journaled before this command
    result: m.TargetResult | None = None  # decided without touching anything
    handles: tuple[runtime.ContainerHandle, ...] = ()
    intent: Entry | None = None  # written before the effect (applies)


@dataclass(frozen=True)
class Outcome:
    result: m.TargetResult
    cleanup_pending: bool = False  # a failed apply whose undo failed too: the watchdog retries it


class Executor:
    def __init__(
        self,
        journal: Journal,
        node: str,
        *,
        registry: dict[str, faults.Fault] | None = None,
        resolve: core.Resolver | None = None,
        clock: Callable[[], float] = time.time,
        policy: authorize.Policy | None = None,
        backends: Backends | None = None,
    ) -> None:
        """`resolve`: container ID -> handle (default: through the backends' runtimes)."""
        self.journal, self.node, self.clock = journal, node, clock
        self.backends = backends or process_backends()  # what the faults run on
        self.resolve = resolve or functools.partial(runtime.resolve, runtimes=self.backends.runtimes)
        # None: no re-checks, for tests of the node machinery alone; the service always passes one.
        self.policy = policy
        self.registry = faults.REGISTRY if registry is None else registry

    # --- commands -------------------------------------------------------------------------------

    def begin(self, cmd: m.NodeCommand, halt: m.HaltState) -> list[Plan]:
        now = self.clock()
        plans = [self._plan(cmd, a, halt, now) for a in cmd.actions]
        intents = [p.intent for p in plans if p.intent is not None]
        # An intent needs its own fsync only if its effect could outlive a crash of this machine:
        # the closing commit (`finish`) is fsynced and covers it.
        durable = not all(faults.ends_with_machine(e.fault, self.registry) for e in intents)
        self.journal.write_intents(intents, now, durable=durable)
        return plans

    def _plan(self, cmd: m.NodeCommand, action: m.TargetAction, halt: m.HaltState, now: float) -> Plan:
        key = entry_key(cmd.experiment_uid, action.selector_key, action.target_id)
        entry = self.journal.get(key)
        plan = Plan(action=action, key=key, entry=entry)
        tag = faults.spec_tag(action.fault)
        if tag not in self.registry:
            return replace(plan, result=core.result(action, False, core.unsupported(action), retryable=False))
        if entry is not None and entry.generation > cmd.generation:
            return replace(plan, result=core.result(action, False, expiry.stale(cmd, entry), retryable=False))
        if action.op == "apply":
            return self._plan_apply(cmd, plan, halt, now)
        return self._plan_recover(plan)

    def _plan_apply(self, cmd: m.NodeCommand, plan: Plan, halt: m.HaltState, now: float) -> Plan:
        action, entry = plan.action, plan.entry
        why = expiry.refuse_apply(cmd, entry, halt, now)
        if why is not None:
            return replace(plan, result=core.result(action, False, why, retryable=False))
        is_lasting = core.lasting(faults.spec_tag(action.fault), self.registry)
        if not is_lasting and entry is not None and entry.generation == cmd.generation and one_shot_done(entry):
            done_at = time.strftime("%H:%M:%S", time.gmtime(entry.updated))
            return replace(
                plan,
                result=core.result(
                    action, True, f"already done on this node at {done_at}Z; a repeated command does not repeat it"
                ),
            )
        refusal = None if self.policy is None else authorize.refuse_action(self.policy, cmd, action)
        if refusal is not None:
            return replace(plan, result=core.result(action, False, refusal, retryable=False))
        try:
            handles = core.resolve_all(action, self.resolve)
        except runtime.UnsupportedRuntime as e:
            return replace(plan, result=core.result(action, False, str(e), retryable=e.retryable))
        refusal = None if self.policy is None else authorize.refuse_handles(self.policy, action, handles)
        if refusal is not None:
            return replace(plan, result=core.result(action, False, refusal, retryable=False))
        intent = Entry(
            key=plan.key,
            experiment_uid=cmd.experiment_uid,
            generation=cmd.generation,
            kind=cmd.kind,
            namespace=cmd.namespace,
            name=cmd.name,
            action=action,
            identity=identity_of(action.pod_uid, handles),
            original=faults.original_state(
                faults.spec_tag(action.fault), cmd.experiment_uid, action, self.registry, handles, self.backends
            ),
            deadline=cmd.deadline if is_lasting else None,
            lasting=is_lasting,
            state=APPLYING,
            command_id=cmd.command_id,
            created=entry.created if entry else now,
        )
        return replace(plan, handles=tuple(handles), intent=intent)

    def _plan_recover(self, plan: Plan) -> Plan:
        entry = plan.entry
        if entry is not None and entry.state == RECOVERED:
            # Already undone and journaled (the node's own expiry, usually, racing this command at the
            # deadline): answer from the journal. Touching the kernel again would cost a context and a
            # transaction per target just when every target of the experiment is being recovered.
            by_node = entry.reason.startswith("recovered:")
            message = entry.reason if by_node else "recovered: nothing of this fault was left to undo"
            return replace(plan, result=core.result(plan.action, True, message))
        if entry is not None:
            return replace(plan, handles=tuple(journal_handles(entry.identity)))
        try:
            return replace(plan, handles=tuple(core.resolve_all(plan.action, self.resolve)))
        except runtime.UnsupportedRuntime as e:
            return replace(plan, result=core.result(plan.action, False, str(e), retryable=e.retryable))

    def applies_lasting(self, cmd: m.NodeCommand) -> bool:
        """Whether the command applies a fault that stays until recovered (the lease watches it)."""
        return any(a.op == "apply" and core.lasting(faults.spec_tag(a.fault), self.registry) for a in cmd.actions)

    def batched(self, plan: Plan) -> bool:
        """A plan whose effect is a quick kernel transaction (see `faults.batched`)."""
        return plan.result is None and faults.batched(faults.spec_tag(plan.action.fault), self.registry)

    def effect(self, cmd: m.NodeCommand, plan: Plan) -> Outcome:
        if plan.result is not None:
            return Outcome(plan.result)
        journaled = plan.intent if plan.intent is not None else plan.entry
        original = journaled.original if journaled is not None else None
        res = core.run_action(
            cmd,
            plan.action,
            containers=list(plan.handles),
            registry=self.registry,
            original=original,
            node=self.node,
            backends=self.backends,
        )
        if plan.action.op == "apply" and not res.ok and plan.intent is not None and plan.intent.lasting:
            # All or nothing: undo whatever part of the fault did land (one netns of two, say).
            cleanup = core.run_action(
                cmd,
                plan.action,
                containers=list(plan.handles),
                registry=self.registry,
                op="recover",
                original=original,
                node=self.node,
                backends=self.backends,
            )
            if not cleanup.ok:
                msg = f"{res.message} (cleanup pending: {cleanup.message})"
                return Outcome(core.result(plan.action, False, msg, retryable=res.retryable), cleanup_pending=True)
        return Outcome(res)

    def finish(
        self, cmd: m.NodeCommand, plans: list[Plan], outcomes: list[Outcome], signed: SignedMark | None = None
    ) -> m.ResultBatch:
        """One transaction: the new states, the result batch into the outbox, the command id as
        handled and, for a signed command, its signature's mark (no replay after a restart).
        """
        changes = [c for p, o in zip(plans, outcomes, strict=True) if (c := _change(p, o)) is not None]
        out = core.batch(cmd, [o.result for o in outcomes], self.node)
        report = Report(subjects.result_subject(self.node, cmd.experiment_uid), cmd.command_id, busmod.encode(out))
        self.journal.commit(changes, reports=[report], command_id=cmd.command_id, signed=signed, now=self.clock())
        return out

    # --- recoveries the node decides on its own ---------------------------------------------------

    def recover_entry(self, entry: Entry) -> m.TargetResult:
        """Recover an open entry through its journaled identity (no NATS, no command)."""
        cmd = command_of(entry)
        return core.run_action(
            cmd,
            entry.action,
            containers=journal_handles(entry.identity),
            registry=self.registry,
            op="recover",
            original=entry.original,
            node=self.node,
            backends=self.backends,
        )

    def reassert(self, entry: Entry) -> m.TargetResult:
        """Apply an open entry again (idempotent) through its journaled identity."""
        return core.run_action(
            command_of(entry),
            entry.action,
            containers=journal_handles(entry.identity),
            registry=self.registry,
            op="apply",
            original=entry.original,
            node=self.node,
            backends=self.backends,
        )

    def commit_recoveries(self, done: list[tuple[expiry.Due, m.TargetResult]]) -> int:
        """Mark recovered entries and queue one report per experiment; returns how many reports."""
        changes, reports = [], []
        by_uid: dict[str, list[tuple[Entry, m.TargetResult]]] = {}
        for due, res in done:
            if res.ok:
                changes.append(Change(due.entry.key, RECOVERED, due.reason, due.ended))
                if due.report:
                    ok = core.result(due.entry.action, True, due.reason, op="recover")
                    by_uid.setdefault(due.entry.experiment_uid, []).append((due.entry, ok))
        for uid, items in by_uid.items():
            first = items[0][0]
            command_id = f"node.{subjects.token(self.node)}.{uid}.{time.time_ns()}"
            out = core.batch(command_of(first, command_id), [r for _, r in items], self.node)
            reports.append(Report(subjects.result_subject(self.node, uid), command_id, busmod.encode(out)))
        self.journal.commit(changes, reports=reports, now=self.clock())
        return len(reports)


def _change(plan: Plan, outcome: Outcome) -> Change | None:
    res = outcome.result
    if plan.result is not None:
        return None
    if plan.action.op == "apply":
        assert plan.intent is not None
        if res.ok:
            return Change(plan.key, ACTIVE if plan.intent.lasting else DONE)
        if outcome.cleanup_pending:
            return Change(plan.key, FAILED, res.message)
        return Change(plan.key, RECOVERED, f"apply failed: {res.message}")
    if plan.entry is None or not res.ok:
        return None
    return Change(plan.key, RECOVERED, res.message)


def command_of(entry: Entry, command_id: str | None = None) -> m.NodeCommand:
    return m.NodeCommand(
        command_id=command_id or entry.command_id,
        experiment_uid=entry.experiment_uid,
        generation=entry.generation,
        kind=entry.kind,
        namespace=entry.namespace,
        name=entry.name,
        node="",
        issued_at=entry.created,
        deadline=entry.deadline,
        actions=[entry.action],
    )


def one_shot_done(entry: Entry) -> bool:
    """Whether a one-shot fault already happened: done, or started (crash mid-way) and the
    process it targeted is no longer the one that was there (killed, or restarted since).
    """
    if entry.state == DONE:
        return True
    if entry.state != APPLYING or not entry.identity.processes:
        # Nothing to tell by (the cluster injector's pod-kill is an API call): say "not yet", so a
        # redelivered command runs it again; a second delete of a Pod already gone changes nothing.
        return False
    return not any(process_same(p) for p in entry.identity.processes)


# --- target identity --------------------------------------------------------------------------


def identity_of(pod_uid: str, handles: list[runtime.ContainerHandle]) -> Identity:
    netns: dict[int, NetnsRef] = {}
    procs = []
    for h in handles:
        if h.pid <= 0:  # the cluster injector's targets are Pods, not processes of this machine
            continue
        if h.alive:
            try:
                ino = netns_inode(h.netns_path)
                netns.setdefault(ino, NetnsRef(h.netns_path, ino))
            except FileNotFoundError:
                pass
        procs.append(ProcRef(h.container_id, h.pid, _create_time(h.pid) if h.alive else 0.0))
    return Identity(pod_uid=pod_uid, netns=tuple(netns.values()), processes=tuple(procs))


def netns_same(ref: NetnsRef) -> bool:
    try:
        return netns_inode(ref.path) == ref.inode
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return False


def process_same(ref: ProcRef) -> bool:
    return ref.create_time > 0 and ref.pid > 1 and _create_time(ref.pid) == ref.create_time


def journal_handles(identity: Identity) -> list[runtime.ContainerHandle]:
    """Handles addressing the target as journaled: its netns while that namespace (same inode)
    exists, even if the process that was in it has been replaced; else its still-live processes.
    """
    first = identity.processes[0] if identity.processes else ProcRef("", 0)
    live_ns = [ns for ns in identity.netns if netns_same(ns)]
    if live_ns:
        return [
            runtime.ContainerHandle(
                container_id=first.container_id,
                pid=first.pid,
                netns_path=ns.path,
                mnt_ns_path=f"/proc/{first.pid}/ns/mnt",
                alive=True,
            )
            for ns in live_ns
        ]
    return [
        runtime.ContainerHandle(
            container_id=p.container_id,
            pid=p.pid,
            netns_path=f"/proc/{p.pid}/ns/net",
            mnt_ns_path=f"/proc/{p.pid}/ns/mnt",
            alive=True,
        )
        for p in identity.processes
        if process_same(p)
    ]


def vanished(entry: Entry) -> str | None:
    """Why the entry's target is gone for good (None: it is still there, or we cannot tell)."""
    ident = entry.identity
    if ident.netns:
        if any(netns_same(ns) for ns in ident.netns):
            return None
        return f"network namespace {ident.netns[0].path} no longer exists"
    if ident.processes and not any(process_same(p) for p in ident.processes):
        return "its processes are gone"
    return None


def _create_time(pid: int) -> float:
    if pid <= 1 or pid == os.getpid():
        return 0.0
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return 0.0
