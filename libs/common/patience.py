"""Riding out NATS being away for a moment: what nats-py raises then, and asking again until it
answers. Around a nats-server restart the connection is away, or connected while JetStream is not
answering yet (or no more: a server in lame duck mode shuts JetStream down first), and a request
then times out or is answered 503 / "no responders".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from chaosbus.common import logging as cblog
from chaosbus.common.tcpnats import tcp_only

with tcp_only():
    import nats.errors
    from nats.aio.client import Client
    from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from chaosbus.common import natsclient

T = TypeVar("T")
log = cblog.get("bus")

# nats.errors.TimeoutError is a TimeoutError. Permanent errors (a payload too large, a permission
# refused, a stream that does not exist) are not among them.
UNREACHABLE: tuple[type[BaseException], ...] = (
    TimeoutError,
    ConnectionError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    ServiceUnavailableError,
    NoStreamResponseError,
)
SETUP_PATIENCE_S = 60.0  # a restart, even one with a slow JetStream recovery, is far shorter
MAX_BACKOFF_S = 2.0


def backoff(attempt: int, first_s: float) -> float:
    """The wait before try `attempt` + 1 (1-based): doubling from `first_s`, at most MAX_BACKOFF_S."""
    return min(MAX_BACKOFF_S, first_s * float(2 ** min(attempt - 1, 5)))


async def until_answered(
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    nc: Client | None = None,
    patience_s: float = SETUP_PATIENCE_S,
    first_backoff_s: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """`call()`'s answer, asked again while NATS is unreachable (UNREACHABLE), for up to
    `patience_s`: then its error is raised (the caller's service ends, loudly, and is restarted).
    With `nc`, the connection `call()` goes out on, a call is made once it is connected, and one
    whose connection is lost is asked again at once, not after its own timeout (its answer would
    never come).
    """
    since, attempt = clock(), 0
    while True:
        try:
            if nc is None:
                answer = await call()
            else:
                await natsclient.until_connected(nc, time.monotonic() + max(0.0, patience_s - (clock() - since)))
                answer = await natsclient.unless_lost(nc, call())
        except UNREACHABLE as e:
            attempt += 1
            if clock() - since > patience_s or (nc is not None and nc.is_closed):
                raise
            if attempt == 1:
                log.warning("NATS not answering; asking again", what=what, error=str(e) or type(e).__name__)
            if not isinstance(e, natsclient.ConnectionLost):  # lost: asked again once reconnected
                await asyncio.sleep(backoff(attempt, first_backoff_s))
            continue
        if attempt:
            log.info("NATS answered again", what=what, retries=attempt)
        return answer
