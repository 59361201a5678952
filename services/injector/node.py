"""The node's own machinery, which needs no NATS: journaled commands, the start-up reconcile and
the watchdog that recovers faults on its own (kill switch, passed deadline, expired lease,
vanished target). The NATS edge (app.py) feeds it commands, leases and halt states when it can,
and publishes what it queued in the journal's outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

from chaosbus.common import logging as cblog
from chaosbus.common import messages as m
from chaosbus.injector import control, expiry
from chaosbus.injector import executor as ex
from chaosbus.injector.journal import APPLYING, DONE, RECOVERED, Change, Entry, Journal, SignedMark, entry_key
from chaosbus.injector.lease import DEFAULT_TTL_S, MAX_TTL_S, LeaseBook
from chaosbus.injector.locks import KeyLocks

T = TypeVar("T")
log = cblog.get("injector.node")
MAX_SLEEP_S = 1.0  # the watchdog looks at least this often (vanished targets, clock jumps)
MAX_RETRY_S = 30.0
KEEP_ENDED_S = 24 * 3600.0
# Due entries per worker job. A recovery costs ~0.2 ms of CPU and no longer blocks (libnft frees
# contexts in the background), so threads only add GIL and journal-lock contention: 10 entries on
# 10 threads took 50 ms and 25 ms of CPU, in one job 15 ms and 15 ms (measured).
RECOVER_CHUNK = 64  # CHAOSBUS_RECOVER_CHUNK
# Targets of a batched fault (a partition: one 0.3-0.8 ms nft transaction each) per worker job.
# One thread hop per target cost more than the transaction: a loop wake-up, a GIL hand-over and
# 16 threads contending for it while ten injectors share two cores.
EFFECT_CHUNK = 25  # CHAOSBUS_EFFECT_CHUNK

Recovered = tuple[expiry.Due, m.TargetResult]


class Node:
    def __init__(
        self,
        journal: Journal,
        executor: ex.Executor,
        *,
        lease_ttl: float = DEFAULT_TTL_S,
        max_lease_ttl: float = MAX_TTL_S,
        workers: int = 16,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        recover_chunk: int = RECOVER_CHUNK,
        effect_chunk: int = EFFECT_CHUNK,
    ) -> None:
        self.journal, self.executor, self.clock, self.mono = journal, executor, clock, mono
        self.halt = journal.halt() or control.RESUMED
        self.halt_seq = journal.halt_seq()  # the highest signer's sequence of any state adopted
        self.lease = LeaseBook(ttl_s=min(lease_ttl, max_lease_ttl), max_ttl_s=max_lease_ttl, exempt=journal.exempt())
        self.locks = KeyLocks()
        self.connected = False
        self.kick = asyncio.Event()  # wake the watchdog now
        self.outbox_kick = asyncio.Event()  # something new to publish
        self.on_recovered: Callable[[list[Recovered]], None] | None = None
        self.on_effect: Callable[[m.TargetAction, m.TargetResult, float], None] | None = None  # metrics
        self.workers, self.recover_chunk, self.effect_chunk = workers, recover_chunk, effect_chunk
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fault")
        self._retry_at: dict[str, float] = {}
        self._attempts: dict[str, int] = {}

    async def run_in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def lease_age(self) -> float:
        """Seconds since the scheduler's last lease reached this node; -1 before the first."""
        heard = self.lease.last_heard
        return -1.0 if heard is None else max(0.0, self.mono() - heard)

    def health(self, name: str, entries: list[Entry], *, interval_s: float, connected_since: float) -> m.NodeHealth:
        """What this node reports about itself on chaos.health.<node> (the dashboard's node page)."""
        return m.NodeHealth(
            node=name,
            at=self.clock(),
            interval_s=interval_s,
            connected_since=connected_since,
            halted=self.halt.halted,
            lease_ttl_s=self.lease.ttl_s,
            lease_age_s=self.lease_age(),
            open_entries=len(entries),
            experiments=journal_summary(entries),
        )

    # --- start-up --------------------------------------------------------------------------------

    async def start(self) -> dict[str, int]:
        """Reconcile the journal before anything else: recover what expired, is halted or vanished,
        settle one-shot faults caught mid-way, and re-assert every fault still wanted.
        """
        entries = await self.run_in_thread(self.journal.open_entries)
        mono = self.mono()
        for uid in {e.experiment_uid for e in entries}:
            self.lease.hold(uid, mono)  # the node was away, not the control plane
        await self.run_in_thread(self.journal.commit, [_settle_one_shot(e) for e in entries if not e.lasting])
        recovered = len(await self.tick(starting=True))
        wanted = [e for e in await self.run_in_thread(self.journal.open_entries) if e.lasting]
        outcomes = await asyncio.gather(*(self._reassert(e) for e in wanted))
        gone = [
            (
                expiry.Due(e, f"recovered: target gone ({why})", ended=False, report=True),
                m.TargetResult(target_id=e.action.target_id, op="recover", ok=True),
            )
            for e, why in zip(wanted, outcomes, strict=True)
            if why
        ]
        if gone:
            await self.run_in_thread(self.executor.commit_recoveries, gone)
            self.outbox_kick.set()
        await self.housekeeping()
        summary = {"open": len(entries), "recovered": recovered + len(gone), "reasserted": len(wanted) - len(gone)}
        log.info("journal reconciled", halted=self.halt.halted, **summary)
        return summary

    async def housekeeping(self) -> None:
        """Forget ended entries and handled commands older than a day; drop stale retry timers."""
        await self.run_in_thread(self.journal.prune, older_than=self.clock() - KEEP_ENDED_S)
        open_keys = {e.key for e in await self.run_in_thread(self.journal.open_entries)}
        for key in [k for k in self._retry_at if k not in open_keys]:
            self._retry_at.pop(key, None)
            self._attempts.pop(key, None)

    async def _reassert(self, entry: Entry) -> str | None:
        """Apply again; the reason the target is gone if it is (None: re-asserted or retried later)."""
        async with self.locks.hold([entry.key]):
            res = await self.run_in_thread(self.executor.reassert, entry)
        if res.ok:
            return None
        if not res.retryable and res.message.startswith("target gone"):
            return res.message.removeprefix("target gone: ")
        log.warning("re-assert failed; kept as is", target=entry.action.target_id, error=res.message)
        return None

    # --- commands, control ------------------------------------------------------------------------

    async def on_command(self, cmd: m.NodeCommand, signed: SignedMark | None = None) -> m.ResultBatch | None:
        """Run a command once (a redelivered one changes nothing); its results go to the outbox,
        with `signed` (its signature's mark) in the same journal transaction.

        A command whose effects make one worker job (one target, or one chunk of a batched fault)
        runs whole in that job: the duplicate check, the intents, the effects and the results,
        one thread hop instead of four (each hop is a loop wake-up and a GIL hand-over, 0.5-4 ms
        apiece on a loaded node, measured).
        """
        keys = [entry_key(cmd.experiment_uid, a.selector_key, a.target_id) for a in cmd.actions]
        if self.executor.applies_lasting(cmd):  # held before the effect: the watchdog must not race it
            self.lease.hold(cmd.experiment_uid, self.mono())
        async with self.locks.hold(keys):
            started = await self.run_in_thread(self._start, cmd, self.halt, signed)
            if started is None:
                log.info("duplicate command ignored", command=cmd.command_id)
                return None
            plans, batch = started
            if batch is None:
                outcomes = await self._effects(cmd, plans)
                batch = await self.run_in_thread(self.executor.finish, cmd, plans, outcomes, signed)
        self.outbox_kick.set()
        self.kick.set()  # a new deadline or lease to watch
        return batch

    def _start(
        self, cmd: m.NodeCommand, halt: m.HaltState, signed: SignedMark | None
    ) -> tuple[list[ex.Plan], m.ResultBatch | None] | None:
        """In a worker: None for a command already handled; else its plans (intents journaled),
        with its result batch when its effects fit this one job and have run.
        """
        if self.journal.command_seen(cmd.command_id):
            return None
        plans = self.executor.begin(cmd, halt)
        jobs = self._jobs(plans)
        if len(jobs) > 1:
            return plans, None
        done = dict(zip(jobs[0], self._timed_effects(cmd, [plans[i] for i in jobs[0]]), strict=True)) if jobs else {}
        outcomes = [ex.Outcome(p.result) if p.result is not None else done[i] for i, p in enumerate(plans)]
        return plans, self.executor.finish(cmd, plans, outcomes, signed)

    def _jobs(self, plans: list[ex.Plan]) -> list[list[int]]:
        """The plans still to run, as worker jobs: batched faults in chunks, the rest (process
        spawns, runtime and API calls, which may wait) one job each.
        """
        batched: list[int] = []
        jobs: list[list[int]] = []
        for i, p in enumerate(plans):
            if p.result is None:
                if self.executor.batched(p):
                    batched.append(i)
                else:
                    jobs.append([i])
        return jobs + [batched[k : k + self.effect_chunk] for k in range(0, len(batched), self.effect_chunk)]

    async def _effects(self, cmd: m.NodeCommand, plans: list[ex.Plan]) -> list[ex.Outcome]:
        """Every plan's effect, in the plans' order, its jobs (`_jobs`) in parallel."""
        # decided from the journal: no thread hop for nothing
        outcomes = [None if p.result is None else ex.Outcome(p.result) for p in plans]

        async def job(indexes: list[int]) -> None:
            done = await self.run_in_thread(self._timed_effects, cmd, [plans[i] for i in indexes])
            for i, outcome in zip(indexes, done, strict=True):
                outcomes[i] = outcome

        await asyncio.gather(*(job(j) for j in self._jobs(plans)))
        done = [o for o in outcomes if o is not None]
        assert len(done) == len(plans)
        return done

    def _timed_effects(self, cmd: m.NodeCommand, plans: list[ex.Plan]) -> list[ex.Outcome]:
        out = []
        for plan in plans:
            start = time.perf_counter()
            outcome = self.executor.effect(cmd, plan)
            if self.on_effect is not None:
                self.on_effect(plan.action, outcome.result, time.perf_counter() - start)
            out.append(outcome)
        return out

    async def set_halt(self, state: m.HaltState, source: str, *, seq: int | None = None) -> str:
        """Adopt `state` if it orders after the current one (control.adopt); persist it; wake the
        watchdog (recover all within 1 s). Returns "" when adopted, else why not.
        """
        why = control.adopt(self.halt, state, current_seq=self.halt_seq, incoming_seq=seq)
        if why:
            return why
        self.halt = state
        self.halt_seq = max(self.halt_seq, seq or 0)
        await self.run_in_thread(self.journal.set_halt, state, self.halt_seq)
        self.kick.set()
        log.warning(
            "HALTED by kill switch" if state.halted else "resumed",
            reason=state.reason,
            by=state.by,
            source=source,
            revision=state.revision,
        )
        return ""

    async def on_lease(self, lease: m.NodeLease) -> None:
        new = self.lease.on_lease(lease, self.mono())
        if new:
            await self.run_in_thread(self.journal.add_exempt, new)
            log.info("lease opt-out", experiments=new)

    # --- the watchdog -----------------------------------------------------------------------------

    async def watchdog(self) -> None:
        while True:
            self.kick.clear()
            try:
                wait = await self.next_wait()
            except Exception as e:  # the watchdog must outlive any bug in one tick
                log.exception("watchdog tick failed", error=str(e))
                wait = MAX_SLEEP_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.kick.wait(), timeout=wait)

    async def next_wait(self) -> float:
        await self.tick()
        entries = await self.run_in_thread(self.journal.open_entries)
        self.lease.forget({e.experiment_uid for e in entries})
        nxt = expiry.next_due(entries, self._world())
        return MAX_SLEEP_S if nxt is None else min(MAX_SLEEP_S, nxt + 0.001)

    def _world(self, starting: bool = False) -> expiry.World:
        return expiry.World(
            now=self.clock(),
            mono=self.mono(),
            halt=self.halt,
            lease=self.lease,
            connected=self.connected,
            starting=starting,
        )

    async def tick(self, *, starting: bool = False) -> list[Recovered]:
        """Recover every open fault that is due now; returns what was recovered."""
        entries, vanished = await self.run_in_thread(self._open_and_vanished)
        world = self._world(starting)
        dues = [
            d
            for d in expiry.due(entries, world, vanished)
            if world.halt.halted or world.mono >= self._retry_at.get(d.entry.key, 0.0)
        ]
        if not dues:
            return []
        jobs = min(self.workers, -(-len(dues) // self.recover_chunk))
        chunks = [dues[i::jobs] for i in range(jobs)]
        done: list[Recovered] = []
        for recovered, reported in await asyncio.gather(*(self._recover(c) for c in chunks)):
            done += recovered
            if reported:
                self.outbox_kick.set()
        _log_recovered(done)
        if done and self.on_recovered is not None:
            self.on_recovered(done)
        return done

    def _open_and_vanished(self) -> tuple[list[Entry], dict[str, str]]:
        entries = self.journal.open_entries()
        return entries, _vanished(entries)

    async def _recover(self, dues: list[expiry.Due]) -> tuple[list[Recovered], int]:
        """Recover due entries and journal the outcome in one worker job (one thread hop for the
        lot: many faults expiring at one deadline leave together), each under its key's lock.
        Returns what was recovered and how many reports were queued.
        """
        async with self.locks.hold(d.entry.key for d in dues):
            outcomes, reported = await self.run_in_thread(self._recover_now, dues)
        settled = [self._settle(d, current, res) for d, (current, res) in zip(dues, outcomes, strict=True)]
        return [r for r in settled if r is not None], reported

    def _recover_now(self, dues: list[expiry.Due]) -> tuple[list[tuple[Entry | None, m.TargetResult | None]], int]:
        out: list[tuple[Entry | None, m.TargetResult | None]] = []
        for d in dues:
            current = self.journal.get(d.entry.key)
            if current is None or not current.is_open:
                out.append((None, None))  # recovered meanwhile (a recover command)
            else:
                out.append((current, self.executor.recover_entry(current)))
        done = [
            (replace(d, entry=current), res)
            for d, (current, res) in zip(dues, out, strict=True)
            if current is not None and res is not None and res.ok
        ]
        return out, self.executor.commit_recoveries(done) if done else 0

    def _settle(self, due: expiry.Due, current: Entry | None, res: m.TargetResult | None) -> Recovered | None:
        if current is None or res is None:
            return None
        key = due.entry.key
        if res.ok:
            self._retry_at.pop(key, None)
            self._attempts.pop(key, None)
            return replace(due, entry=current), res
        n = self._attempts[key] = self._attempts.get(key, 0) + 1
        self._retry_at[key] = self.mono() + min(MAX_RETRY_S, 2.0 ** (n - 1))
        log.warning("recovery failed; will retry", target=current.action.target_id, attempt=n, error=res.message)
        return None


def journal_summary(entries: list[Entry]) -> list[m.JournalSummary]:
    """Open entries counted per experiment, in a stable order."""
    by_uid: dict[str, m.JournalSummary] = {}
    for e in entries:
        seen = by_uid.get(e.experiment_uid)
        by_uid[e.experiment_uid] = m.JournalSummary(
            experiment_uid=e.experiment_uid,
            namespace=e.namespace,
            name=e.name,
            kind=e.kind,
            entries=(seen.entries if seen else 0) + 1,
        )
    return [by_uid[k] for k in sorted(by_uid)]


def _log_recovered(done: list[Recovered]) -> None:
    """One line per experiment and reason, not per target: 1,000 targets expiring at once are one
    line each for their experiments, not 1,000 lines written while the CPU is needed elsewhere.
    """
    groups: dict[tuple[str, str, str], list[str]] = {}
    for due, _ in done:
        e = due.entry
        groups.setdefault((e.namespace, e.name, due.reason), []).append(e.action.target_id)
    for (namespace, name, reason), targets in groups.items():
        log.info(
            "recovered by the node",
            experiment=name,
            namespace=namespace,
            reason=reason,
            count=len(targets),
            targets=targets[:5] + ([f"... {len(targets) - 5} more"] if len(targets) > 5 else []),
        )


def _vanished(entries: list[Entry]) -> dict[str, str]:
    return {e.key: why for e in entries if e.lasting and (why := ex.vanished(e))}


def _settle_one_shot(entry: Entry) -> Change:
    """A one-shot fault found open at start: it happened (or its target is no longer the one it
    was meant for) or it never ran and the re-sent command will run it.
    """
    if entry.state == APPLYING and not ex.one_shot_done(entry):
        return Change(entry.key, RECOVERED, "interrupted before it ran (the injector restarted)")
    return Change(entry.key, DONE, entry.reason)
