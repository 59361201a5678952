"""The kill switch as the injector sees it: several sources (its journal, the KV key
`control/halt`, the subject `chaos.control.halt`) may each carry a halt state. They are ordered
by the KV revision the state was written at (assigned by the server, never a client's clock),
and a halt wins a tie. A resume must also be newer, by its signer's sequence, than every state
adopted before: an old resume written again (a new revision, an old signature) un-halts nothing.
Pure.
"""

from __future__ import annotations

import time

from chaosbus.common import messages as m

RESUMED = m.HaltState(halted=False, reason="", at=0.0)


def adopt(current: m.HaltState, incoming: m.HaltState, *, current_seq: int, incoming_seq: int | None) -> str:
    """Whether to adopt `incoming`: "" (yes), else why not. `incoming_seq` None: unsigned mode,
    where there is no signer's sequence to compare.
    """
    if incoming.revision < current.revision:
        return "older"
    if incoming.revision == current.revision and (current.halted or not incoming.halted):
        return "older"  # the same revision again, or a tie a halt wins
    if not incoming.halted and incoming_seq is not None and incoming_seq <= current_seq:
        return "replayed"
    return ""


def describe(state: m.HaltState) -> str:
    reason = state.reason or "no reason given"
    return f"{reason}; by {state.by}" if state.by else reason


def refusal(state: m.HaltState) -> str:
    """The message a refused apply carries while halted."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.at)) if state.at else "?"
    return (
        f"refused: chaosbus is halted by the kill switch ({describe(state)}) since {since}; "
        "nothing is injected until `chaosbus resume`"
    )


def recovered_reason(state: m.HaltState) -> str:
    return f"recovered: halted by kill switch ({describe(state)})"
