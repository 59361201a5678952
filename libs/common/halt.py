"""Reading the kill switch (KV `control/halt`) for whoever must refuse new experiments while it is
engaged: `chaosbus apply` and the direct trigger `chaos.trigger.apply`.
"""

from __future__ import annotations

import time

from nats.js.errors import KeyNotFoundError

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import signing, subjects


async def current(bus: busmod.Bus) -> m.HaltState | None:
    kv = await bus.kv(subjects.CONTROL.name)
    try:
        entry = await kv.get(subjects.HALT_KEY)
    except KeyNotFoundError:
        return None
    # Advisory (an apply refused while halted): the injectors check the signature before acting.
    return busmod.decode(signing.peek(entry.value), m.HaltState) if entry.value else None


def halted_message(state: m.HaltState) -> str:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.at))
    reason = state.reason or "no reason given"
    return (f"chaosbus is halted by the kill switch since {since} ({reason}; by {state.by}): "
            "nothing is injected until `chaosbus resume`")
