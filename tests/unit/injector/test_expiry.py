"""Pure decisions of the node: what to recover now and why, what an apply must refuse, the lease
book and the newest-wins kill switch.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from unit.injector.factories import entry

from chaosbus.common import messages as m
from chaosbus.injector import control, expiry
from chaosbus.injector import journal as jr
from chaosbus.injector.expiry import World
from chaosbus.injector.lease import LeaseBook

RUNNING = m.HaltState(halted=False)
HALTED = m.HaltState(halted=True, reason="incident 42", at=50.0, by="ops@host")


def world(
    *,
    now: float = 10.0,
    mono: float = 1000.0,
    halt: m.HaltState = RUNNING,
    lease: LeaseBook | None = None,
    connected: bool = True,
    starting: bool = False,
) -> World:
    return World(
        now=now, mono=mono, halt=halt, lease=lease or LeaseBook(ttl_s=15.0), connected=connected, starting=starting
    )


def cmd(*, deadline: float | None = None, generation: int = 1) -> m.NodeCommand:
    return m.NodeCommand(
        command_id="c",
        experiment_uid="u1",
        generation=generation,
        kind="NetworkChaos",
        namespace="ns",
        name="x",
        node="n1",
        issued_at=0.0,
        deadline=deadline,
    )


# --- due ------------------------------------------------------------------------------------------


def test_nothing_is_due_for_a_running_fault_before_its_deadline() -> None:
    assert expiry.due([entry(state=jr.ACTIVE, deadline=20.0)], world(now=10.0)) == []


@pytest.mark.parametrize(
    ("w", "expected"),
    [
        (world(now=20.0), "recovered: deadline passed (expired by the node)"),
        (
            world(now=20.0, connected=False),
            "recovered: deadline passed while the control plane was unreachable (expired by the node)",
        ),
        (world(now=20.0, starting=True), "recovered: deadline passed while the injector was down"),
    ],
)
def test_a_passed_deadline_says_in_what_circumstances(w: World, expected: str) -> None:
    [d] = expiry.due([entry(state=jr.ACTIVE, deadline=20.0)], w)
    assert (d.reason, d.ended, d.report) == (expected, False, False)


def test_the_kill_switch_wins_over_everything_and_ends_the_fault() -> None:
    [d] = expiry.due([entry(state=jr.ACTIVE, deadline=20.0)], world(now=30.0, halt=HALTED), {"u1|.|ns/p": "gone"})
    assert d.reason == "recovered: halted by kill switch (incident 42; by ops@host)"
    assert d.ended and d.report


def test_a_vanished_target_is_reported_not_ended() -> None:
    [d] = expiry.due([entry(state=jr.ACTIVE)], world(), {"u1|.|ns/p": "network namespace /x no longer exists"})
    assert d.reason == "recovered: target gone (network namespace /x no longer exists)"
    assert not d.ended and d.report


def test_lease_expiry_holds_only_for_faults_without_deadline() -> None:
    book = LeaseBook(ttl_s=15.0)
    book.hold("u1", 0.0)
    timed, untimed = entry("k1", state=jr.ACTIVE, deadline=1e9), entry("k2", state=jr.ACTIVE, deadline=None)
    assert expiry.due([timed, untimed], world(mono=14.9, lease=book)) == []
    [d] = expiry.due([timed, untimed], world(mono=15.0, lease=book, connected=False))
    assert d.entry.key == "k2" and d.ended and d.report
    assert d.reason == "recovered: control-plane lease expired (NATS unreachable for 15s)"


def test_a_failed_apply_is_cleaned_up() -> None:
    [d] = expiry.due([entry(state=jr.FAILED)], world())
    assert d.reason.startswith("recovered after a failed apply") and not d.report


@pytest.mark.parametrize("state", [jr.RECOVERED, jr.DONE])
def test_closed_entries_are_never_due(state: str) -> None:
    assert expiry.due([entry(state=state)], world(halt=HALTED)) == []


def test_one_shot_entries_are_never_recovered() -> None:
    assert expiry.due([entry(state=jr.APPLYING, lasting=False)], world(halt=HALTED)) == []


def test_next_due_is_the_nearest_deadline_or_lease_expiry() -> None:
    book = LeaseBook(ttl_s=15.0)
    book.hold("u2", 1000.0)
    entries = [entry("k1", state=jr.ACTIVE, deadline=13.0), entry("k2", state=jr.ACTIVE, uid="u2", deadline=None)]
    assert expiry.next_due(entries, world(now=10.0, mono=1000.0, lease=book)) == pytest.approx(3.0)
    assert expiry.next_due(entries, world(now=20.0, mono=1000.0, lease=book)) == 0.0
    assert expiry.next_due([], world()) is None


# --- refusing applies -----------------------------------------------------------------------------


def test_an_apply_while_halted_is_refused_with_a_clear_message() -> None:
    why = expiry.refuse_apply(cmd(), None, HALTED, now=1.0)
    assert why is not None and why.startswith("refused: chaosbus is halted by the kill switch (incident 42")
    assert "`chaosbus resume`" in why


def test_an_apply_after_its_deadline_is_not_applied() -> None:
    assert "deadline" in (expiry.refuse_apply(cmd(deadline=5.0), None, RUNNING, now=5.0) or "")
    assert expiry.refuse_apply(cmd(deadline=5.0), None, RUNNING, now=4.9) is None


def test_an_older_generation_is_stale() -> None:
    assert "stale" in (expiry.refuse_apply(cmd(generation=1), entry(generation=2), RUNNING, 1.0) or "")


def test_a_fault_ended_by_halt_or_lease_is_never_reapplied_in_that_generation() -> None:
    reason = "recovered: control-plane lease expired (NATS unreachable for 15s)"
    e = replace(entry(state=jr.RECOVERED), ended=True, reason=reason)
    why = expiry.refuse_apply(cmd(), e, RUNNING, 1.0)
    assert why == (
        "refused: this fault already ended (control-plane lease expired (NATS unreachable for 15s)); "
        "delete and re-create the experiment to run it again"
    )
    assert expiry.refuse_apply(cmd(generation=2), e, RUNNING, 1.0) is None


def test_a_recovered_but_not_ended_fault_may_be_applied_again() -> None:
    assert expiry.refuse_apply(cmd(), entry(state=jr.RECOVERED), RUNNING, 1.0) is None


# --- lease book, kill switch ----------------------------------------------------------------------


def test_a_renewal_extends_only_the_experiments_it_lists() -> None:
    book = LeaseBook(ttl_s=15.0)
    book.hold("a", 0.0)
    book.hold("b", 0.0)
    book.on_lease(m.NodeLease(node="n1", ttl_s=10.0, held=["a"]), 12.0)
    assert not book.expired("a", 21.9) and book.expired("a", 22.0)
    assert book.expired("b", 15.0)
    assert book.ttl_s == 10.0 and book.silence(13.0) == 1.0


def test_exempt_experiments_never_expire_and_new_exemptions_are_returned_once() -> None:
    book = LeaseBook(ttl_s=1.0)
    book.hold("a", 0.0)
    assert book.on_lease(m.NodeLease(node="n1", exempt=["a"]), 0.0) == ["a"]
    assert book.on_lease(m.NodeLease(node="n1", exempt=["a"]), 0.0) == []
    assert not book.expired("a", 1e9)


def test_holding_never_shortens_a_lease() -> None:
    book = LeaseBook(ttl_s=15.0)
    book.on_lease(m.NodeLease(node="n1", ttl_s=30.0, held=["a"]), 0.0)
    book.ttl_s = 15.0
    book.hold("a", 1.0)
    assert book.until["a"] == 30.0


def test_forget_drops_experiments_without_open_faults() -> None:
    book = LeaseBook()
    book.hold("a", 0.0)
    book.hold("b", 0.0)
    book.forget({"a"})
    assert set(book.until) == {"a"}


def at(revision: int, halted: bool, when: float = 50.0) -> m.HaltState:
    return m.HaltState(halted=halted, at=when, revision=revision)


@pytest.mark.parametrize(
    ("current", "incoming", "seqs", "expected"),
    [
        (control.RESUMED, at(1, True), (0, 5), ""),
        (at(3, True), at(4, False), (5, 6), ""),  # a later resume
        (at(3, True), at(2, False), (5, 6), "older"),  # a stale read of the key loses
        (at(3, True), at(3, False), (5, 6), "older"),  # a tie: the halt wins
        (at(3, False), at(3, True), (5, 6), ""),  # a tie: the halt wins
        (at(3, True), at(3, True), (5, 6), "older"),  # nothing new
        (at(3, True), at(9, False, when=1e18), (5, 4), "replayed"),  # an old resume written again
        (at(3, False), at(9, True), (5, 4), ""),  # an old halt written again still halts: that is safe
        (at(3, True), at(0, False, when=1e18), (5, None), "older"),  # the client's clock orders nothing
        (at(3, True), at(4, False), (5, None), ""),  # unsigned mode: the revision alone
    ],
)
def test_halt_states_are_ordered_by_kv_revision_and_a_halt_wins_a_tie(
    current: m.HaltState, incoming: m.HaltState, seqs: tuple[int, int | None], expected: str
) -> None:
    assert control.adopt(current, incoming, current_seq=seqs[0], incoming_seq=seqs[1]) == expected
