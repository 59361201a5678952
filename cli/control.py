"""`chaosbus halt` / `chaosbus resume`: the global kill switch.

`halt` writes the KV key `control/halt` (durable: a component that restarts, or connects later,
finds it still set) and broadcasts the same state on `chaos.control.halt` (every injector reacts
at once): each recovers every fault within a second and refuses applies until `resume`.

Both are signed with the operator key (not the scheduler's: the kill switch must work while the
scheduler is down). The KV copy never expires; the broadcast carries the revision the put was
given, signed, and expires after a minute. Injectors order states by that revision.
"""

from __future__ import annotations

import time
from pathlib import Path

from chaosbus.common import bus as busmod
from chaosbus.common import signing
from chaosbus.common.halt import current, halted_message, set_halt

__all__ = ["current", "halt", "halted_message", "operator_signer", "resume", "set_halt", "status"]


def local_trust() -> signing.Trust | None:
    """The kill-switch keys this machine's injectors trust (the keys dir), to read the stored state
    as they would; None (advisory) in unsigned mode or where they cannot be read.
    """
    if signing.unsigned_mode():
        return None
    try:
        return signing.Trust.from_dir(signing.keys_dir())
    except (OSError, ValueError):
        return None


def operator_signer(path: str | None = None) -> signing.Signer | None:
    """The operator key: --operator-key, else operator.key in the keys dir (None in unsigned mode)."""
    if signing.unsigned_mode():
        return None
    key = Path(path) if path else signing.keys_dir() / "operator.key"
    try:
        return signing.Signer.from_file(key)
    except (OSError, ValueError) as e:
        from chaosbus.cli.resources import UsageError  # here: resources imports nats-py unmasked (tcpnats)

        raise UsageError(
            f"cannot read the operator key ({e}); it signs the kill switch (--operator-key FILE, or CHAOSBUS_KEYS_DIR)"
        ) from None


async def halt(bus: busmod.Bus, reason: str, signer: signing.Signer | None) -> str:
    state = await set_halt(bus, halted=True, reason=reason, signer=signer)
    return (
        "halted: every injector recovers every fault now and refuses new ones until `chaosbus resume`"
        f" (reason: {state.reason or 'none given'})"
    )


async def resume(bus: busmod.Bus, signer: signing.Signer | None) -> str:
    before = await current(bus)
    await set_halt(bus, halted=False, reason="resumed", signer=signer)
    if before is None or not before.halted:
        return "resumed (chaosbus was not halted)"
    return (
        "resumed: new experiments are injected again; faults ended by the halt stay ended "
        "(delete and re-apply an experiment to run it again)"
    )


async def status(bus: busmod.Bus) -> str:
    """The kill switch as stored (the KV key) and as the injectors take it: engaged or not, since
    when, by whom and why.
    """
    state = await current(bus, local_trust())
    if state is None or not state.halted:
        return "kill switch: not engaged"
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.at))
    return f"kill switch: ENGAGED since {since} by {state.by or '?'}\nreason: {state.reason or 'none given'}"
