"""The node side of the dead-man lease: which experiments the control plane still holds here.

Pure and clock-injected (monotonic seconds). A fault without a duration stays in force only while
the scheduler keeps listing its experiment in the node's lease (`NodeLease.held`, every ttl/3).
An experiment is held from the moment a fault of it is applied, and from the injector's start for
faults found in the journal (the node, not the control plane, was away); then for `ttl` after
each lease that lists it. Experiments in `NodeLease.exempt` (annotation `chaosbus.io/lease:
"none"`) never expire by lease. When NATS is down no lease arrives, so everything held expires
`ttl` after the last renewal: that is the point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chaosbus.common import messages as m

DEFAULT_TTL_S = 15.0
# The longest ttl a node honours, whatever a lease says: a lease can hold a fault only that long
# past the scheduler's last word.
MAX_TTL_S = 300.0


@dataclass
class LeaseBook:
    ttl_s: float = DEFAULT_TTL_S
    max_ttl_s: float = MAX_TTL_S
    until: dict[str, float] = field(default_factory=dict)  # experiment uid -> monotonic expiry
    exempt: set[str] = field(default_factory=set)
    last_heard: float | None = None  # monotonic time of the last lease for this node

    def hold(self, uid: str, mono: float) -> None:
        """Start (or extend) holding `uid` for a full ttl: a fault was just applied or found."""
        self.until[uid] = max(self.until.get(uid, mono), mono + self.ttl_s)

    def on_lease(self, lease: m.NodeLease, mono: float) -> list[str]:
        """A renewal arrived; returns exempt uids not known before (to persist)."""
        if lease.ttl_s > 0:
            self.ttl_s = min(lease.ttl_s, self.max_ttl_s)
        self.last_heard = mono
        for uid in lease.held:
            self.until[uid] = mono + self.ttl_s
        new = [u for u in lease.exempt if u not in self.exempt]
        self.exempt.update(new)
        return new

    def expired(self, uid: str, mono: float) -> bool:
        if uid in self.exempt:
            return False
        until = self.until.get(uid)
        return until is not None and mono >= until

    def next_expiry(self, uids: set[str]) -> float | None:
        times = [self.until[u] for u in uids if u in self.until and u not in self.exempt]
        return min(times) if times else None

    def forget(self, live_uids: set[str]) -> None:
        """Drop experiments with no open fault here any more (the book stays small)."""
        for uid in [u for u in self.until if u not in live_uids]:
            del self.until[uid]

    def silence(self, mono: float) -> float | None:
        """Seconds since the last lease for this node (None: none heard since start)."""
        return None if self.last_heard is None else mono - self.last_heard
