"""The node journal on a real SQLite file: intents are durable before any effect, one transaction
per commit, one owner per file, and everything a restarted injector needs survives a reopen.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from unit.injector.factories import entry

from chaosbus.common import messages as m
from chaosbus.injector import journal as jr
from chaosbus.injector.journal import Change, Journal, NetnsRef, Report, SignedMark


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "j.db")
    yield j  # type: ignore[misc]
    j.close()


def test_an_intent_round_trips_with_everything_needed_to_recover(journal: Journal) -> None:
    e = entry()
    journal.write_intents([e], now=10.0)
    got = journal.get(e.key)
    assert got is not None
    assert (got.action, got.identity, got.original, got.deadline, got.state) == (
        e.action,
        e.identity,
        e.original,
        100.0,
        jr.APPLYING,
    )
    assert got.fault == "partition" and got.is_open and got.created == 10.0


def test_intents_register_their_netns_as_sweeper_scope(journal: Journal) -> None:
    journal.write_intents([entry()])
    assert journal.netns() == [NetnsRef("/var/run/netns/a", 7)]
    journal.forget_netns([NetnsRef("/var/run/netns/a", 7)])
    assert journal.netns() == []


def test_commit_changes_states_queues_reports_and_marks_the_command_in_one_go(journal: Journal) -> None:
    journal.write_intents([entry("k1"), entry("k2")])
    journal.commit(
        [Change("k1", jr.ACTIVE), Change("k2", jr.RECOVERED, "recovered: x", ended=True)],
        reports=[Report("chaos.result.u1", "c1", b"{}")],
        command_id="c1",
    )
    assert [(e.key, e.state) for e in journal.open_entries()] == [("k1", jr.ACTIVE)]
    k2 = journal.get("k2")
    assert k2 is not None and (k2.reason, k2.ended) == ("recovered: x", True)
    assert journal.command_seen("c1") and not journal.command_seen("c2")
    assert [(r.subject, r.msg_id, r.payload) for r in journal.outbox()] == [("chaos.result.u1", "c1", b"{}")]


def test_outbox_keeps_order_and_forgets_what_was_published(journal: Journal) -> None:
    journal.commit([], reports=[Report("s", f"id{i}", b"x") for i in range(3)])
    rows = journal.outbox()
    assert [r.msg_id for r in rows] == ["id0", "id1", "id2"]
    journal.outbox_done(rows[0].seq)
    assert [r.msg_id for r in journal.outbox()] == ["id1", "id2"]


def test_a_failing_transaction_changes_nothing(journal: Journal) -> None:
    journal.write_intents([entry("k1")])
    with pytest.raises(AttributeError):
        journal.commit([Change("k1", jr.ACTIVE), None])  # type: ignore[list-item]
    got = journal.get("k1")
    assert got is not None and got.state == jr.APPLYING


def test_halt_state_and_exemptions_persist(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    j.set_halt(m.HaltState(halted=True, reason="r", at=5.0))
    j.add_exempt(["u1", "u1", "u2"])
    j.close()
    j = Journal(tmp_path / "j.db")
    assert j.halt() == m.HaltState(halted=True, reason="r", at=5.0)
    assert j.exempt() == {"u1", "u2"}
    j.close()


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db", sync="normal")
    j.write_intents([entry()])
    j.close()
    j = Journal(tmp_path / "j.db")
    assert [e.key for e in j.open_entries()] == ["u1|.|ns/p"]
    j.close()


def test_one_live_owner_per_journal(journal: Journal) -> None:
    with pytest.raises(jr.JournalBusy, match="in use by another injector"):
        Journal(journal.path)


def test_unknown_sync_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sync"):
        Journal(tmp_path / "j.db", sync="off")


def test_prune_drops_old_ended_entries_but_never_open_ones(journal: Journal) -> None:
    journal.write_intents([entry("open"), entry("ended")], now=1.0)
    journal.commit([Change("ended", jr.RECOVERED, "r")], command_id="c", now=2.0)
    assert journal.prune(older_than=3.0) == 1
    assert [e.key for e in journal.entries()] == ["open"]
    assert not journal.command_seen("c")


def test_the_journal_and_its_wal_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "j" / "node.db"
    path.parent.mkdir()
    path.touch(mode=0o644)  # left by an older version: tightened on open
    j = Journal(path)
    try:
        j.write_intents([entry("a")])
        modes = {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir() if p.name.startswith("node.db")}
    finally:
        j.close()
    assert modes["node.db"] == 0o600 and modes["node.db-wal"] == 0o600, modes


KILLED_MID_COMMAND = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from unit.injector.factories import entry
from chaosbus.injector.journal import ACTIVE, Change, Journal, Report, SignedMark

j = Journal(Path({path!r}))
j.remember_lease("kid-1", "chaos.lease.n1", 9)  # the lease that came just ahead of the command
j.write_intents([entry("u1|.|ns/a")], now=1.0, durable=False)  # a fault that ends with the machine
j.write_intents([entry("u2|.|ns/b")], now=1.0, durable=False)
j.commit(
    [Change("u1|.|ns/a", ACTIVE)],
    reports=[Report("chaos.result.n1.u1", "c1", b"{{}}")],
    command_id="c1",
    signed=SignedMark("kid-1", 7, 2e9),
)
os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: as kill -9 leaves it
"""


def test_a_killed_injector_leaves_its_unsynced_intents_lease_marks_and_signed_marks(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    tests = str(Path(__file__).resolve().parents[2])
    code = KILLED_MID_COMMAND.format(tests=tests, path=str(path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    again = Journal(path)
    try:
        # the intent of a fault still being applied when the process died: the restart recovers it
        second = again.get("u2|.|ns/b")
        assert second is not None and second.state == jr.APPLYING
        first = again.get("u1|.|ns/a")
        assert first is not None and first.state == jr.ACTIVE
        # the executed signed command: its id and its mark, so a replay is refused after the restart
        assert again.command_seen("c1") and again.signed(now=1e9) == [("kid-1", 7, 2e9)]
        assert again.leases() == [("kid-1", "chaos.lease.n1", 9)]
        assert [r.msg_id for r in again.outbox()] == ["c1"]
    finally:
        again.close()


def test_a_lease_carried_by_a_command_is_marked_with_it_and_only_a_newer_one_replaces_it(journal: Journal) -> None:
    journal.commit([], command_id="c1", signed=SignedMark("kid-1", 7, 2e9, lease_subject="chaos.lease.n1"))
    assert journal.leases() == [("kid-1", "chaos.lease.n1", 7)]
    journal.remember_lease("kid-1", "chaos.lease.n1", 5)  # an older lease written late
    journal.remember_signed(SignedMark("kid-1", 6, 2e9, lease_subject="chaos.lease.n1"))
    assert journal.leases() == [("kid-1", "chaos.lease.n1", 7)]
    journal.remember_signed(SignedMark("kid-1", 9, 2e9, lease_subject="chaos.lease.n1"))
    journal.commit([], command_id="c2", signed=SignedMark("kid-1", 10, 2e9))  # carried none
    assert journal.leases() == [("kid-1", "chaos.lease.n1", 9)]
    assert sorted(journal.signed(now=1e9)) == [("kid-1", s, 2e9) for s in (6, 7, 9, 10)]


def test_an_unsynced_intent_leaves_the_journal_in_its_sync_mode(journal: Journal) -> None:
    journal.write_intents([entry()], durable=False)
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again for what follows
