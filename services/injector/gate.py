"""The injector's door: every command, lease and kill-switch state passes here before the node
sees it. Signatures are checked against the trusted keys (scheduler keys for commands and leases,
operator keys for the kill switch, guard keys for halts only), then freshness and replays; each refusal is counted in
`chaosbus_injector_messages_refused_total{what,reason}` and written as one audit line (what, subject,
signer key id, reason, why). Unsigned mode (CHAOSBUS_UNSIGNED=1, only to measure what signing
costs) decodes plain messages and checks nothing but the lease bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

import msgspec
from prometheus_client import CollectorRegistry, Counter

from chaosbus.common import bus as busmod
from chaosbus.common import logging as cblog
from chaosbus.common import messages as m
from chaosbus.common import signing, subjects

M = TypeVar("M", bound=m.Message)
audit = cblog.get("audit")
What = Literal["command", "lease", "halt"]
PRUNE_EVERY_S = 10.0  # forgetting expired commands is a scan of the replay book: not per command


@dataclass(frozen=True)
class HaltIn:
    """A kill-switch state whose signature held; `seq` None in unsigned mode."""

    state: m.HaltState
    seq: int | None
    kid: str = ""


@dataclass(frozen=True)
class Ticket:
    """A signed command accepted for execution: remembered as executed once it has been.
    `lease_subject`: the lease stream whose newest lease the command carried ("" if none), to be
    journaled with it.
    """

    kid: str
    seq: int
    exp: float
    lease_subject: str = ""


@dataclass(frozen=True)
class LeaseMark:
    """The newest lease accepted from a signer on a subject: anything not after it is a replay."""

    kid: str
    subject: str
    seq: int


class Gate:
    def __init__(
        self, trust: signing.Trust | None, registry: CollectorRegistry, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.trust, self.clock = trust, clock  # trust None: unsigned mode
        self.replays = signing.ReplayBook()
        self._pruned = 0.0
        self.refused = Counter(
            "chaosbus_injector_messages_refused_total",
            "Messages refused before anything was done, by what and why",
            ["what", "reason"],
            registry=registry,
        )
        for what in ("command", "lease", "halt"):
            for reason in signing.REASONS:
                self.refused.labels(what, reason)

    def load(self, executed: Iterable[tuple[str, int, float]], leases: Iterable[LeaseMark] = ()) -> None:
        """What the journal says was accepted before: signed commands executed, and the newest
        lease per (signer, subject). A restart must refuse a replay of either.
        """
        for kid, seq, exp in executed:
            self.replays.mark(kid, seq, exp)
        for mark in leases:
            key = (mark.kid, mark.subject)
            self.replays.highest[key] = max(mark.seq, self.replays.highest.get(key, 0))

    def refuse(self, what: What, subject: str, err: signing.Refused) -> None:
        self.refused.labels(what, err.reason).inc()
        audit.warning(
            "refused", audit=True, what=what, subject=subject, signer=err.kid or "-", reason=err.reason, why=err.detail
        )

    # --- commands ---------------------------------------------------------------------------------

    def command(self, data: bytes, subject: str) -> tuple[m.NodeCommand, Ticket | None] | None:
        """The command if it may run (its ticket marks it in flight until `executed`/`failed`);
        None if it was refused (counted, audited) or is malformed (logged).
        """
        if self.trust is None:
            plain = _decoded(data, m.NodeCommand, subject)
            return None if plain is None else (plain, None)
        now = self.clock()
        try:
            opened = self.trust.open(data, aud=subject, role="scheduler", now=now)
            self.replays.check_once(opened)
        except signing.Refused as e:
            self.refuse("command", subject, e)
            return None
        cmd = _decoded(opened.payload, m.NodeCommand, subject)
        if cmd is None:
            return None
        ticket = Ticket(opened.kid, opened.claims.seq, opened.claims.exp)
        if cmd.lease is not None:
            cmd, ticket = self._carried_lease(cmd, opened, subject, ticket)
        self.replays.mark(ticket.kid, ticket.seq, ticket.exp)
        if now - self._pruned > PRUNE_EVERY_S:
            self.replays.prune(now)
            self._pruned = now
        return cmd, ticket

    def _carried_lease(
        self, cmd: m.NodeCommand, opened: signing.Opened, subject: str, ticket: Ticket
    ) -> tuple[m.NodeCommand, Ticket]:
        """A lease inside a command is signed with it: it is taken as the newest lease of its
        node's lease stream if the command's sequence is newer than the last lease taken there,
        and dropped otherwise (a command redelivered after a later lease), the command still runs.
        A lease for another node than the command's subject is dropped too.
        """
        assert cmd.lease is not None
        stream = subjects.lease_subject(cmd.lease.node)
        if subjects.command_subject(cmd.lease.node) != subject:
            cblog.get("injector").warning("lease for another node dropped", subject=subject, node=cmd.lease.node)
            return msgspec.structs.replace(cmd, lease=None), ticket
        try:
            self.replays.check_newer(opened, stream)
        except signing.Refused:
            return msgspec.structs.replace(cmd, lease=None), ticket
        return cmd, replace(ticket, lease_subject=stream)

    def failed(self, ticket: Ticket | None) -> None:
        """The command did not complete (it will be redelivered): its redelivery is no replay."""
        if ticket is not None:
            self.replays.unmark(ticket.kid, ticket.seq)

    # --- leases and the kill switch ---------------------------------------------------------------

    def lease(self, data: bytes, subject: str) -> tuple[m.NodeLease, LeaseMark | None] | None:
        """The lease if it may be honoured, with its mark (signer, subject, sequence) for the
        journal, so that a restarted injector still refuses it and anything older (None: unsigned
        mode); None if it was refused or is malformed.
        """
        if self.trust is None:
            plain = _decoded(data, m.NodeLease, subject)
            return None if plain is None else (plain, None)
        try:
            opened = self.trust.open(data, aud=subject, role="scheduler", now=self.clock())
            self.replays.check_newer(opened, subject)
        except signing.Refused as e:
            self.refuse("lease", subject, e)
            return None
        lease = _decoded(opened.payload, m.NodeLease, subject)
        return None if lease is None else (lease, LeaseMark(opened.kid, subject, opened.claims.seq))

    def halt(self, data: bytes, subject: str, *, revision: int | None) -> HaltIn | None:
        """A kill-switch state with its signer's sequence. `revision`: the KV entry's, for the
        key's copy; None for the broadcast, which carries it signed (and expires soon).
        """
        seq: int | None = None
        kid, payload = "", data
        role: signing.Role = "operator"  # unsigned mode: whoever wrote it
        if self.trust is not None:
            try:
                opened = self.trust.open(
                    data, aud=signing.CONTROL_AUD, role=signing.HALT_ROLES, now=self.clock(), expires=revision is None
                )
            except signing.Refused as e:
                self.refuse("halt", subject, e)
                return None
            kid, payload, seq, role = opened.kid, opened.payload, opened.claims.seq, opened.role
        state = _decoded(payload, m.HaltState, subject)
        if state is None:
            return None
        if not signing.may_sign_halt_state(role, state.halted):
            self.refuse("halt", subject, signing.Refused("forged", kid, f"a {role} key may halt, never resume"))
            return None
        return HaltIn(state if revision is None else msgspec.structs.replace(state, revision=revision), seq, kid)


def _decoded(data: bytes, kind: type[M], subject: str) -> M | None:
    try:
        return busmod.decode(data, kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        cblog.get("injector").error("malformed message dropped", subject=subject, error=str(e))
        return None
