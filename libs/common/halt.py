"""The kill switch (KV `control/halt` and its broadcast): reading it, for whoever must refuse new
experiments while it is engaged (`chaosbus apply`, the direct trigger `chaos.trigger.apply`), and
setting it, signed with the operator key (`chaosbus halt`/`resume`, the dashboard).
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Callable

import msgspec

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import signing, subjects


async def current(bus: busmod.Bus, trust: signing.Trust | None = None) -> m.HaltState | None:
    """The kill switch as its KV key holds it. Without `trust` (or a trust with no kill-switch
    key), advisory: the signature is not checked, the injectors check it before acting. With it, as
    an injector would take it: see `judged`.
    """
    entry = await (await bus.bucket(subjects.CONTROL)).entry_of(subjects.HALT_KEY)
    if entry is None or entry.deleted:
        return None
    if trust is None or not any(trust.kids(role) for role in signing.HALT_ROLES):
        return entry.value  # None: it does not decode (logged)
    return judged(entry.data, trust, time.time())


def judged(data: bytes, trust: signing.Trust, now: float) -> m.HaltState:
    """A stored kill-switch state checked as the injectors check it, failing safe: one they would
    refuse (not signed by a kill-switch key, or a resume signed by the SLO guard's halt-only key)
    reads as halted, so nothing is admitted that every injector would refuse anyway.
    """
    try:
        opened = trust.open(data, aud=signing.CONTROL_AUD, role=signing.HALT_ROLES, now=now, expires=False)
        state = busmod.decode(opened.payload, m.HaltState)
    except signing.Refused as e:
        why = f"the stored kill-switch state is not trusted ({e})"
        return m.HaltState(halted=True, reason=f"{why}; an operator sets it again: `chaosbus halt`, `chaosbus resume`")
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        return m.HaltState(halted=True, reason=f"the stored kill-switch state is malformed ({e})")
    if not signing.may_sign_halt_state(opened.role, state.halted):
        why = f"a resume signed with the {opened.role} key was refused (it may halt, never resume)"
        return msgspec.structs.replace(state, halted=True, reason=f"{why}; `chaosbus resume` releases it")
    return state


def halted_message(state: m.HaltState) -> str:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.at))
    reason = state.reason or "no reason given"
    return (
        f"chaosbus is halted by the kill switch since {since} ({reason}; by {state.by}): "
        "nothing is injected until `chaosbus resume`"
    )


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


def _broadcast_seal(signer: signing.Signer | None) -> Callable[[str, bytes], bytes] | None:
    """Kill-switch states are signed for their audience (`control.halt`), whatever the subject."""
    if signer is None:
        return None
    return lambda _subject, data: signer.seal(signing.CONTROL_AUD, data, ttl_s=signing.BROADCAST_TTL_S)


async def set_halt(
    bus: busmod.Bus, *, halted: bool, reason: str = "", signer: signing.Signer | None, by: str | None = None
) -> m.HaltState:
    """Write the state to the KV key (durable), then broadcast it with the revision the put got."""
    state = m.HaltState(halted=halted, reason=reason, at=time.time(), by=by or who())
    seal = None if signer is None else (lambda data: signer.seal(signing.CONTROL_AUD, data, ttl_s=None))
    revision = await (await bus.bucket(subjects.CONTROL)).put(subjects.HALT_KEY, state, seal=seal)
    state = msgspec.structs.replace(state, revision=revision)
    await bus.signal(subjects.HALT, subjects.HALT_SUBJECT, state, seal=_broadcast_seal(signer))
    await bus.nc.flush()
    return state
