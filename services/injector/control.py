"""The kill switch as the injector sees it: several sources (its journal, the KV key
`control/halt`, the subject `chaos.control.halt`) may each carry a halt state; the newest wins.
Pure.
"""

from __future__ import annotations

import time

from chaosbus.common import messages as m

RESUMED = m.HaltState(halted=False, reason="", at=0.0)


def newest(current: m.HaltState, incoming: m.HaltState | None) -> m.HaltState:
    """`incoming` if it is newer than `current` (ties keep the current state)."""
    if incoming is None or incoming.at <= current.at:
        return current
    return incoming


def describe(state: m.HaltState) -> str:
    reason = state.reason or "no reason given"
    return f"{reason}; by {state.by}" if state.by else reason


def refusal(state: m.HaltState) -> str:
    """The message a refused apply carries while halted."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.at)) if state.at else "?"
    return (f"refused: chaosbus is halted by the kill switch ({describe(state)}) since {since}; "
            "nothing is injected until `chaosbus resume`")


def recovered_reason(state: m.HaltState) -> str:
    return f"recovered: halted by kill switch ({describe(state)})"
