"""The leader lease's pure logic, with an injected clock: who creates, renews, waits and takes
over, and when a leader must stop acting.
"""

from __future__ import annotations

from chaosbus.common import messages as m
from chaosbus.scheduler.leader import MAX_HONOURED_TTL_S, Leadership

TTL = 10.0


def lease(holder: str, at: float = 0.0) -> m.LeaderLease:
    return m.LeaderLease(holder=holder, renewed_at=at, ttl_s=TTL)


def test_no_lease_is_created() -> None:
    assert Leadership("a", TTL).step(None, None, 0.0) == "create"


def test_a_deleted_lease_is_created_again() -> None:
    assert Leadership("a", TTL).step(None, 7, 0.0) == "create"


def test_own_lease_is_renewed_even_after_a_restart_with_the_same_id() -> None:
    assert Leadership("a", TTL).step(lease("a"), 3, 100.0) == "renew"


def test_standby_takes_over_only_after_the_revision_stood_still_for_ttl() -> None:
    b = Leadership("b", TTL)
    assert b.step(lease("a"), 5, 100.0) == "wait"
    assert b.step(lease("a"), 5, 109.9) == "wait"
    assert b.step(lease("a"), 5, 110.0) == "take"


def test_a_huge_ttl_in_the_key_keeps_no_standby_waiting_for_ever() -> None:
    """Whoever can write `scheduler/leader` cannot park every scheduler with a forged ttl."""
    b = Leadership("b", TTL)
    forged = m.LeaderLease(holder="x", renewed_at=100.0, ttl_s=1e18)
    assert b.step(forged, 5, 100.0) == "wait"
    assert b.step(forged, 5, 100.0 + MAX_HONOURED_TTL_S - 0.1) == "wait"
    assert b.step(forged, 5, 100.0 + MAX_HONOURED_TTL_S) == "take"


def test_a_renewal_seen_restarts_the_standbys_count() -> None:
    b = Leadership("b", TTL)
    b.step(lease("a"), 5, 100.0)
    assert b.step(lease("a", 103.0), 6, 103.5) == "wait"
    assert b.step(lease("a", 103.0), 6, 112.0) == "wait"
    assert b.step(lease("a", 103.0), 6, 113.5) == "take"


def test_the_leases_own_timestamp_is_not_trusted() -> None:
    """A leader whose clock is far behind still renews: only the revision counts."""
    b = Leadership("b", TTL)
    assert b.step(lease("a", at=0.0), 5, 1_000_000.0) == "wait"


def test_winning_makes_a_leader_that_acts_until_ttl_without_renewal() -> None:
    a = Leadership("a", TTL)
    a.won(100.0)
    assert a.acting(100.0) and a.acting(109.9)
    assert not a.acting(110.0)


def test_lost_cas_stops_acting_immediately() -> None:
    a = Leadership("a", TTL)
    a.won(100.0)
    a.lost()
    assert not a.acting(100.1)


def test_a_leader_that_sees_another_holder_stops_acting() -> None:
    a = Leadership("a", TTL)
    a.won(100.0)
    assert a.step(lease("b"), 9, 101.0) == "wait"
    assert not a.acting(101.0)


def test_takeover_scenario_within_15_seconds_of_the_leaders_last_renewal() -> None:
    """Leader a renews every ttl/3 then dies; standby b polls every ttl/3 and takes over."""
    a, b = Leadership("a", TTL), Leadership("b", TTL)
    revision, current, t = 1, lease("a", 0.0), 0.0
    a.won(0.0)
    last_renewal = 0.0
    taken_at = None
    while t < 60 and taken_at is None:
        t += TTL / 3
        if t <= 20:  # a alive: renews
            revision, current, last_renewal = revision + 1, lease("a", t), t
            a.won(t)
        if b.step(current, revision, t + 0.5) == "take":
            taken_at = t + 0.5
    assert taken_at is not None and taken_at - last_renewal <= 15.0


def test_renewal_cadence_is_a_third_of_ttl() -> None:
    assert Leadership("a", 9.0).renew_every == 3.0


def test_a_twin_with_the_same_id_makes_the_leader_yield() -> None:
    a = Leadership("a", TTL, session="s1")
    a.won(100.0)
    twin = m.LeaderLease(holder="a", renewed_at=101.0, ttl_s=TTL, session="s2")
    assert a.step(twin, 8, 101.0) == "wait" and a.twin_seen and not a.acting(101.0)


def test_a_restarted_holder_takes_its_lease_back_at_once() -> None:
    before_kill = m.LeaderLease(holder="a", renewed_at=90.0, ttl_s=TTL, session="old")
    assert Leadership("a", TTL, session="new").step(before_kill, 8, 95.0) == "renew"
