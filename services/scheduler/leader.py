"""Leader election over one KV key (`scheduler/leader`): only the holder of a fresh lease acts.
Pure: the edge reads the key, asks `step` what to do, performs the compare-and-set, and reports
the outcome; the clock is injected.

Expiry is judged on the standby's own clock: a lease is stale when its KV revision has not
changed for `ttl_s` since this instance first saw it, so clocks that disagree between machines
cannot cause an early takeover. The leader stops acting as soon as a renewal loses its
compare-and-set, and also when it has not renewed for `ttl_s` by its own clock (it may then
already have been replaced, so it must assume it was).

A standby honours a lease's ttl only up to `max(own ttl, MAX_HONOURED_TTL_S)`: whoever can write
the key cannot keep every scheduler on standby with a huge ttl.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from chaosbus.common import messages as m

Step = Literal["create", "renew", "take", "wait"]
MAX_HONOURED_TTL_S = 60.0


@dataclass
class Leadership:
    holder: str
    ttl_s: float = 10.0
    session: str = ""
    leader: bool = False
    renewed_at: float = 0.0  # when the last successful compare-and-set was started (local clock)
    seen_revision: int | None = None
    seen_at: float = 0.0
    twin_seen: bool = False

    @property
    def renew_every(self) -> float:
        return self.ttl_s / 3

    def step(self, current: m.LeaderLease | None, revision: int | None, now: float) -> Step:
        """What to do with the lease as just read (`None`: no key, or a deleted one)."""
        if current is None or revision is None:
            return "create"
        if current.holder == self.holder:
            if self.leader and current.session != self.session:
                # Another process renewed under our id (a twin: ids must be unique); yield to it.
                self.leader, self.twin_seen = False, True
                return "wait"
            return "renew"  # ours, or ours from before a restart with the same id: taken back at once
        if self.leader:  # someone else holds it: whatever happened, this instance is not the leader
            self.leader = False
            return "wait"
        if revision != self.seen_revision:
            self.seen_revision, self.seen_at = revision, now
            return "wait"
        honoured = min(current.ttl_s, max(self.ttl_s, MAX_HONOURED_TTL_S))
        return "take" if now - self.seen_at >= honoured else "wait"

    def record(self, now: float) -> m.LeaderLease:
        return m.LeaderLease(holder=self.holder, renewed_at=now, ttl_s=self.ttl_s, session=self.session)

    def won(self, started_at: float) -> None:
        """The compare-and-set started at `started_at` succeeded."""
        self.leader, self.renewed_at = True, started_at
        self.seen_revision = None

    def lost(self) -> None:
        """A compare-and-set failed (someone else wrote first) or could not be made."""
        self.leader = False

    def acting(self, now: float) -> bool:
        """True while this instance may act: it holds the lease and renewed it within ttl."""
        return self.leader and now - self.renewed_at < self.ttl_s
