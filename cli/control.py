"""`chaosbus halt` / `chaosbus resume`: the global kill switch.

`halt` writes the KV key `control/halt` (durable: a component that restarts, or connects later,
finds it still set) and broadcasts the same state on `chaos.control.halt` (every injector reacts
at once): each recovers every fault within a second and refuses applies until `resume`.
"""

from __future__ import annotations

import getpass
import socket
import time

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import subjects
from chaosbus.common.halt import current, halted_message

__all__ = ["current", "halt", "halted_message", "resume", "set_halt"]


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


async def set_halt(bus: busmod.Bus, *, halted: bool, reason: str = "") -> m.HaltState:
    state = m.HaltState(halted=halted, reason=reason, at=time.time(), by=_who())
    payload = busmod.encode(state)
    kv = await bus.kv(subjects.CONTROL.name)
    await kv.put(subjects.HALT_KEY, payload)
    await bus.nc.publish(subjects.HALT_SUBJECT, payload)
    await bus.nc.flush()
    return state


async def halt(bus: busmod.Bus, reason: str) -> str:
    state = await set_halt(bus, halted=True, reason=reason)
    return ("halted: every injector recovers every fault now and refuses new ones until `chaosbus resume`"
            f" (reason: {state.reason or 'none given'})")


async def resume(bus: busmod.Bus) -> str:
    before = await current(bus)
    await set_halt(bus, halted=False, reason="resumed")
    if before is None or not before.halted:
        return "resumed (chaosbus was not halted)"
    return ("resumed: new experiments are injected again; faults ended by the halt stay ended "
            "(delete and re-apply an experiment to run it again)")
