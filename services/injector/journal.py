"""The node journal: what this node's injector did to the kernel and to processes, written BEFORE it
touches them, so a restarted injector knows what to recover or re-assert.

SQLite from the standard library, WAL mode, `synchronous=FULL` by default (every commit is fsynced:
a machine crash loses nothing committed); `normal` trades the last commits on power loss for
speed. One exception to the fsync: intents whose faults end with the machine (their effect lives
only in this machine's kernel or processes, e.g. a partition's nft table) are written without one
(`write_intents(durable=False)`). A killed injector still finds them (the write is in the OS's
cache), a power loss takes the effect with the intent, and the command's closing commit, which
is fsynced, makes them durable with it. One process owns a journal at a time (an exclusive `flock`
on `<path>.lock`).

Tables:
  entries   one row per (experiment uid, selector key, target id): the intent, the target's
            identity (netns path + inode, process pid + start time), the state to restore, the
            deadline, the state (applying, active, failed, done, recovered) and why it ended.
  commands  command ids already handled, so a redelivered command changes nothing.
  outbox    result batches not yet published (NATS may be down); published in order.
  settings  the last halt state adopted (with its KV revision and its signer's sequence);
            experiments exempt from the lease.
  signed    (signer key id, sequence, expiry) of every signed command executed, until it
            expires: a restarted injector refuses a replay of one.
  leases    (signer key id, subject) -> the sequence of the newest lease accepted, alone (written
            without an fsync of its own) or inside a command (with that command's mark): a
            restarted injector refuses that lease and older ones.
  netns     every network namespace this node ever touched: the orphan sweeper's scope.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from chaosbus.common import messages as m

APPLYING, ACTIVE, FAILED, DONE, RECOVERED = "applying", "active", "failed", "done", "recovered"
# The kernel or a process may still hold something of the fault in these states.
OPEN_STATES = (APPLYING, ACTIVE, FAILED)
SYNC_MODES = ("full", "normal")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
  key TEXT PRIMARY KEY, experiment_uid TEXT NOT NULL, generation INTEGER NOT NULL,
  kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, action BLOB NOT NULL,
  identity BLOB NOT NULL, original BLOB NOT NULL, deadline REAL, lasting INTEGER NOT NULL,
  state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', ended INTEGER NOT NULL DEFAULT 0,
  command_id TEXT NOT NULL DEFAULT '', created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS entries_state ON entries(state);
CREATE TABLE IF NOT EXISTS commands (command_id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, subject TEXT NOT NULL,
  msg_id TEXT NOT NULL, payload BLOB NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS outbox_aside (seq INTEGER PRIMARY KEY, subject TEXT NOT NULL, msg_id TEXT NOT NULL,
  payload BLOB NOT NULL, at REAL NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS signed (kid TEXT NOT NULL, seq INTEGER NOT NULL, exp REAL NOT NULL,
  PRIMARY KEY (kid, seq));
CREATE TABLE IF NOT EXISTS leases (kid TEXT NOT NULL, subject TEXT NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY (kid, subject));
CREATE TABLE IF NOT EXISTS exempt (experiment_uid TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS netns (path TEXT NOT NULL, inode INTEGER NOT NULL, last_used REAL NOT NULL,
  PRIMARY KEY (path, inode));
"""
_ENTRY_COLUMNS = (
    "key, experiment_uid, generation, kind, namespace, name, action, identity, original, "
    "deadline, lasting, state, reason, ended, command_id, created, updated"
)


class JournalBusy(RuntimeError):
    """Another live process owns this journal."""


class NetnsRef(msgspec.Struct, frozen=True):
    path: str
    inode: int


class ProcRef(msgspec.Struct, frozen=True):
    container_id: str
    pid: int
    create_time: float = 0.0  # 0: the process was already gone when the intent was written


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    """Who the target was when the fault was applied: how a restarted injector finds it again,
    and how it tells a vanished target from a live one (an inode or a start time changes).
    """

    pod_uid: str = ""
    netns: tuple[NetnsRef, ...] = ()
    processes: tuple[ProcRef, ...] = ()


@dataclass(frozen=True)
class Entry:
    """One fault on one target, as journaled."""

    key: str
    experiment_uid: str
    generation: int
    kind: str
    namespace: str
    name: str
    action: m.TargetAction
    identity: Identity
    original: dict[str, Any]  # what recovering restores (per fault kind)
    deadline: float | None
    lasting: bool  # False: one-shot, nothing to recover (pod-kill, container-kill, hello-world)
    state: str
    reason: str = ""
    ended: bool = False  # ended by the kill switch or the lease: never re-applied for this generation
    command_id: str = ""
    created: float = 0.0
    updated: float = 0.0

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def fault(self) -> str:
        return str(type(self.action.fault).__struct_config__.tag)


@dataclass(frozen=True)
class Change:
    """A new state for an entry (applied with others in one transaction)."""

    key: str
    state: str
    reason: str = ""
    ended: bool = False


@dataclass(frozen=True)
class Report:
    """A message to publish once NATS is reachable (kept across restarts)."""

    subject: str
    msg_id: str
    payload: bytes


@dataclass(frozen=True)
class SignedMark:
    """A signed command executed here: its signer's key id, sequence and expiry (a restarted
    injector refuses a replay of it until it expires). `lease_subject`: the lease stream whose
    newest lease the command carried ("": none), recorded as if that lease had come on its own.
    """

    kid: str
    seq: int
    exp: float
    lease_subject: str = ""


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    subject: str
    msg_id: str
    payload: bytes


def entry_key(experiment_uid: str, selector_key: str, target_id: str) -> str:
    return f"{experiment_uid}|{selector_key}|{target_id}"


class Journal:
    """Thread-safe (one connection behind a lock); every public method is one transaction."""

    def __init__(self, path: Path, *, sync: str = "full") -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"journal sync must be one of {SYNC_MODES}, got {sync!r}")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._lockfile = _take_ownership(path)
        _private(path)
        self._lock = threading.Lock()
        self.sync = sync
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={sync.upper()}")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        os.close(self._lockfile)

    @contextlib.contextmanager
    def _tx(self, *, fsync: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; `fsync=False` commits it without an fsync (WAL: written, not synced)."""
        with self._lock:
            relaxed = not fsync and self.sync != "normal"
            if relaxed:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if relaxed:
                    self._db.execute(f"PRAGMA synchronous={self.sync.upper()}")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- entries --------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        rows = self._query(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE key = ?", (key,))
        return _entry(rows[0]) if rows else None

    def open_entries(self) -> list[Entry]:
        marks = ",".join("?" * len(OPEN_STATES))
        rows = self._query(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE state IN ({marks}) ORDER BY key", OPEN_STATES)
        return [_entry(r) for r in rows]

    def entries(self) -> list[Entry]:
        return [_entry(r) for r in self._query(f"SELECT {_ENTRY_COLUMNS} FROM entries ORDER BY key")]

    def write_intents(self, intents: list[Entry], now: float | None = None, *, durable: bool = True) -> None:
        """Record entries (state `applying`) and their netns before any effect: durably, or with
        `durable=False` safe from a killed process but not from a power loss (for effects that
        end with the machine; the next fsynced commit makes them durable).
        """
        if not intents:
            return
        now = time.time() if now is None else now
        with self._tx(fsync=durable) as db:
            for e in intents:
                db.execute(
                    f"INSERT OR REPLACE INTO entries ({_ENTRY_COLUMNS}) VALUES ({','.join('?' * 17)})", _row(e, now)
                )
                for ns in e.identity.netns:
                    db.execute("INSERT OR REPLACE INTO netns VALUES (?, ?, ?)", (ns.path, ns.inode, now))

    def commit(
        self,
        changes: Sequence[Change],
        *,
        reports: Sequence[Report] = (),
        command_id: str = "",
        signed: SignedMark | None = None,
        now: float | None = None,
    ) -> None:
        """New entry states, the messages reporting them, and (optionally) a handled command id and
        its signature's mark, all in ONE transaction: a crash leaves either all of it or none.
        """
        now = time.time() if now is None else now
        with self._tx() as db:
            for c in changes:
                db.execute(
                    "UPDATE entries SET state = ?, reason = ?, ended = ?, updated = ? WHERE key = ?",
                    (c.state, c.reason, int(c.ended), now, c.key),
                )
            for r in reports:
                db.execute(
                    "INSERT INTO outbox (subject, msg_id, payload, at) VALUES (?, ?, ?, ?)",
                    (r.subject, r.msg_id, r.payload, now),
                )
            if command_id:
                db.execute("INSERT OR REPLACE INTO commands VALUES (?, ?)", (command_id, now))
            if signed is not None:
                _mark(db, signed)

    # --- commands, outbox -----------------------------------------------------------------------

    def command_seen(self, command_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM commands WHERE command_id = ?", (command_id,)))

    def outbox(self, limit: int = 100) -> list[OutboxRow]:
        rows = self._query("SELECT seq, subject, msg_id, payload FROM outbox ORDER BY seq LIMIT ?", (limit,))
        return [OutboxRow(int(s), str(subj), str(mid), bytes(p)) for s, subj, mid, p in rows]

    def outbox_done(self, seq: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def outbox_replace(self, seq: int, payload: bytes) -> None:
        """A row's payload replaced in place (it keeps its turn), the original moved aside."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO outbox_aside SELECT seq, subject, msg_id, payload, ?, ? FROM outbox "
                "WHERE seq = ?",
                (time.time(), "replaced by a smaller payload", seq),
            )
            db.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (payload, seq))

    def outbox_aside(self, seq: int, reason: str) -> None:
        """A row that can never be sent moved out of the outbox, kept for inspection: the rows
        behind it go on.
        """
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO outbox_aside SELECT seq, subject, msg_id, payload, ?, ? FROM outbox "
                "WHERE seq = ?",
                (time.time(), reason, seq),
            )
            db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def set_aside(self) -> list[tuple[int, str]]:
        """(seq, reason) of every row moved out of the outbox."""
        return [(int(s), str(r)) for s, r in self._query("SELECT seq, reason FROM outbox_aside ORDER BY seq")]

    # --- settings -------------------------------------------------------------------------------

    def halt(self) -> m.HaltState | None:
        rows = self._query("SELECT value FROM settings WHERE key = 'halt'")
        return msgspec.json.decode(rows[0][0], type=m.HaltState) if rows else None

    def halt_seq(self) -> int:
        """The highest signer's sequence of any kill-switch state adopted (0: none)."""
        rows = self._query("SELECT value FROM settings WHERE key = 'halt_seq'")
        return int(rows[0][0]) if rows else 0

    def set_halt(self, state: m.HaltState, seq: int = 0) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO settings VALUES ('halt', ?)", (msgspec.json.encode(state),))
            db.execute("INSERT OR REPLACE INTO settings VALUES ('halt_seq', ?)", (str(seq).encode(),))

    def remember_signed(self, mark: SignedMark) -> None:
        """A signed command's mark on its own (one that ends without a result commit)."""
        with self._tx() as db:
            _mark(db, mark)

    def signed(self, now: float) -> list[tuple[str, int, float]]:
        """Signed commands executed here that have not expired yet."""
        return [
            (str(k), int(q), float(e))
            for k, q, e in self._query("SELECT kid, seq, exp FROM signed WHERE exp > ?", (now,))
        ]

    def remember_lease(self, kid: str, subject: str, seq: int) -> None:
        """The newest lease accepted from `kid` on `subject`, one that came on its own (a lease
        carried by a command is marked with it, `SignedMark.lease_subject`). Written without an
        fsync of its own: a renewal must not hold the journal while an apply's intent waits for
        it. A killed injector still finds it; a power loss may lose it, and a lease replayed after
        the reboot is bounded by its own expiry (and the faults it could hold that end with the
        machine are gone).
        """
        with self._tx(fsync=False) as db:
            _newest_lease(db, kid, subject, seq)

    def leases(self) -> list[tuple[str, str, int]]:
        return [(str(k), str(s), int(q)) for k, s, q in self._query("SELECT kid, subject, seq FROM leases")]

    def exempt(self) -> set[str]:
        return {str(r[0]) for r in self._query("SELECT experiment_uid FROM exempt")}

    def add_exempt(self, uids: list[str], now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO exempt VALUES (?, ?)", [(u, now) for u in uids])

    # --- netns scope, pruning -------------------------------------------------------------------

    def netns(self) -> list[NetnsRef]:
        return [NetnsRef(str(p), int(i)) for p, i in self._query("SELECT path, inode FROM netns ORDER BY path")]

    def forget_netns(self, refs: list[NetnsRef]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM netns WHERE path = ? AND inode = ?", [(r.path, r.inode) for r in refs])

    def prune(self, *, older_than: float) -> int:
        """Drop ended entries, handled command ids and exemptions last touched before `older_than`."""
        marks = ",".join("?" * len(OPEN_STATES))
        with self._tx() as db:
            n = db.execute(
                f"DELETE FROM entries WHERE state NOT IN ({marks}) AND updated < ?", (*OPEN_STATES, older_than)
            ).rowcount
            db.execute("DELETE FROM commands WHERE at < ?", (older_than,))
            db.execute("DELETE FROM signed WHERE exp < ?", (older_than,))
            db.execute(
                "DELETE FROM exempt WHERE at < ? AND experiment_uid NOT IN (SELECT experiment_uid FROM entries)",
                (older_than,),
            )
        return int(n)


def _private(path: Path) -> None:
    """The journal holds every target's original state: readable by its owner only. SQLite gives
    its -wal and -shm files the database file's mode, so making that one 0600 covers all three.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(name, 0o600)


def _take_ownership(path: Path) -> int:
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalBusy(f"journal {path} is in use by another injector") from None
    return fd


_action_decoder = msgspec.json.Decoder(m.TargetAction)
_identity_decoder = msgspec.json.Decoder(Identity)


def _row(e: Entry, now: float) -> tuple[Any, ...]:
    enc = msgspec.json.encode
    return (
        e.key,
        e.experiment_uid,
        e.generation,
        e.kind,
        e.namespace,
        e.name,
        enc(e.action),
        enc(e.identity),
        enc(e.original),
        e.deadline,
        int(e.lasting),
        e.state,
        e.reason,
        int(e.ended),
        e.command_id,
        e.created or now,
        now,
    )


def _entry(r: tuple[Any, ...]) -> Entry:
    return Entry(
        key=r[0],
        experiment_uid=r[1],
        generation=int(r[2]),
        kind=r[3],
        namespace=r[4],
        name=r[5],
        action=_action_decoder.decode(r[6]),
        identity=_identity_decoder.decode(r[7]),
        original=msgspec.json.decode(r[8]),
        deadline=r[9],
        lasting=bool(r[10]),
        state=r[11],
        reason=r[12],
        ended=bool(r[13]),
        command_id=r[14],
        created=r[15],
        updated=r[16],
    )


def _mark(db: sqlite3.Connection, mark: SignedMark) -> None:
    db.execute("INSERT OR REPLACE INTO signed VALUES (?, ?, ?)", (mark.kid, mark.seq, mark.exp))
    if mark.lease_subject:
        _newest_lease(db, mark.kid, mark.lease_subject, mark.seq)


def _newest_lease(db: sqlite3.Connection, kid: str, subject: str, seq: int) -> None:
    """Writes may arrive out of order: the highest sequence stays."""
    db.execute(
        "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT (kid, subject) DO UPDATE SET seq = max(seq, excluded.seq)",
        (kid, subject, seq),
    )
