"""Handling one message of an ordered consumer (a follower), which cannot nak: a failing handler is
retried in place. A handler bug gets a few quick tries, then the message is logged and skipped (a
follower stuck behind it would be deaf to everything after it). A handler that could not reach
NATS (the connection is away, or JetStream is not answering, as around a nats-server restart; any
timeout counts, an API server's too) is tried again until it can, so no message is skipped for an
outage; after `patience_s` the error is raised, ending the follower and with it the service, whose
restart replays the stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from chaosbus.common import logging as cblog
from chaosbus.common.patience import UNREACHABLE, backoff

T = TypeVar("T")
log = cblog.get("bus")
BUG_ATTEMPTS = 5
PATIENCE_S = 120.0  # a nats-server restart, even with a slow JetStream recovery, is far shorter


async def handle(
    handler: Callable[[T], Awaitable[None]],
    decoded: T,
    subject: str,
    *,
    patience_s: float = PATIENCE_S,
    first_backoff_s: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run `handler(decoded)` until it succeeds, retrying as the module docstring says."""
    bugs, waits, since = 0, 0, clock()
    while True:
        try:
            await handler(decoded)
        except asyncio.CancelledError:
            raise
        except UNREACHABLE as e:
            if clock() - since > patience_s:
                log.error(
                    "handler could not reach NATS for too long", subject=subject, error=str(e) or type(e).__name__
                )
                raise
            if waits == 0:
                log.warning("handler could not reach NATS; retrying", subject=subject, error=str(e) or type(e).__name__)
            waits += 1
        except Exception as e:
            bugs += 1
            if bugs == BUG_ATTEMPTS:
                log.exception("handler failed; event skipped", subject=subject, error=str(e))
                return
        else:
            if waits:
                log.info("handler reached NATS again", subject=subject, retries=waits)
            return
        await asyncio.sleep(backoff(bugs + waits, first_backoff_s))
