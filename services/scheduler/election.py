"""The leader lease's edge: read `scheduler/leader`, compare-and-set it on its revision, wait as a
standby until the lease is ours, then renew it every ttl/3 and raise `LostLeadership` the moment
a renewal loses (or cannot be made for ttl), so everything the leader runs is cancelled with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Literal

import nats.errors

from chaosbus.common import bus as busmod
from chaosbus.common import logging as cblog
from chaosbus.common import messages as m
from chaosbus.common import subjects
from chaosbus.scheduler.leader import Leadership

log = cblog.get("scheduler")


Outcome = Literal["held", "not held", "unreachable"]


class LostLeadership(RuntimeError):
    pass


class Election:
    def __init__(
        self,
        kv: busmod.TypedBucket[subjects.SchedulerValue],
        lead: Leadership,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv, self.lead, self.clock = kv, lead, clock

    async def _read(self) -> tuple[m.LeaderLease | None, int | None]:
        # A deleted key still has a revision to compare against; garbage in the key (logged by the
        # bucket) is overwritten like a missing lease.
        entry = await self.kv.entry_of(subjects.LEADER_KEY)
        if entry is None:
            return None, None
        return (entry.value if isinstance(entry.value, m.LeaderLease) else None), entry.revision

    async def attempt(self) -> Outcome:
        """One round: read, decide, compare-and-set."""
        try:
            current, revision = await self._read()
        except (nats.errors.Error, TimeoutError):
            return "unreachable"
        started = self.clock()
        if self.lead.step(current, revision, started) == "wait":
            return "not held"
        lease = self.lead.record(started)
        try:
            if revision is None:
                await self.kv.create(subjects.LEADER_KEY, lease)
            else:
                await self.kv.update(subjects.LEADER_KEY, lease, last=revision)
        except busmod.WrongRevision:  # someone else wrote first
            self.lead.lost()
            return "not held"
        except (nats.errors.Error, TimeoutError):
            return "unreachable"
        self.lead.won(started)
        return "held"

    async def acquire(self, standing: Callable[[Outcome], None] | None = None) -> None:
        """Wait as a standby (sending nothing) until this instance holds the lease; `standing` is
        told each attempt's outcome (a standby that reads the lease is a healthy one).
        """
        waiting_logged = False
        while (outcome := await self.attempt()) != "held":
            if standing is not None:
                standing(outcome)
            if not waiting_logged:
                log.info("standby: another scheduler holds the leader lease", ttl=self.lead.ttl_s)
                waiting_logged = True
            await asyncio.sleep(self.lead.renew_every)
        log.info("leader lease taken", holder=self.lead.holder, ttl=self.lead.ttl_s)

    async def keep(self) -> None:
        """Renew every ttl/3 while leading; raise LostLeadership when a renewal loses its
        compare-and-set, or when none succeeded for ttl (NATS unreachable: a standby may have
        taken over meanwhile). A shorter outage, such as a nats-server restart, is ridden out.
        """
        while True:
            await asyncio.sleep(self.lead.renew_every)
            try:
                outcome = await asyncio.wait_for(self.attempt(), timeout=self.lead.renew_every)
            except TimeoutError:
                outcome = "unreachable"
            if outcome == "unreachable" and self.lead.acting(self.clock()):
                log.warning("leader lease not renewed: NATS unreachable", holder=self.lead.holder)
                continue
            if outcome != "held" or not self.lead.acting(self.clock()):
                self.lead.lost()
                if self.lead.twin_seen:
                    log.error(
                        "another scheduler renewed the lease under this --instance id: ids must be "
                        "unique among running schedulers",
                        holder=self.lead.holder,
                    )
                log.error("leader lease lost: stopping at once", holder=self.lead.holder, outcome=outcome)
                raise LostLeadership(self.lead.holder)
