"""Riding out the Kubernetes API being away, for a service that writes to it (the recorder in
cluster mode): which failures mean the API is not answering now, how long to wait before asking
again, and asking again until it answers.

Not answering: a refused or reset connection, a timeout (an API server restarting, a network blip),
a 5xx, a 429 (the server's priority and fairness asking this client to slow down). Those are waited
out, the wait doubling up to MAX_BACKOFF_S, or as long as the server's Retry-After says (at most
MAX_RETRY_AFTER_S). Any other answer (404, 409, 422, 403, ...) is the caller's, at once: the server
has spoken, and asking again would get the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from chaosbus.common import logging as cblog

T = TypeVar("T")
log = cblog.get("kube")
MAX_BACKOFF_S = 5.0
MAX_RETRY_AFTER_S = 30.0
REQUEST_TIMEOUT_S = 30.0  # one request; a write of a 1,000-target status takes well under a second


def unanswered(e: BaseException) -> str:
    """Why `e` means the API is not answering now ("" when it is an answer, or a bug)."""
    if isinstance(e, ApiException):
        status = int(e.status or 0)
        return f"HTTP {status} {e.reason or ''}".strip() if status == 429 or status >= 500 else ""
    if isinstance(e, aiohttp.ClientError | OSError | TimeoutError):
        return str(e) or type(e).__name__
    return ""


def retry_after(e: BaseException) -> float | None:
    """The seconds a 429 or 503 asked to wait (Retry-After in seconds; a date form is not used by
    the API server), None when it did not say."""
    headers: Any = getattr(e, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def wait_s(attempt: int, e: BaseException, first_s: float = 0.2) -> float:
    """The wait before try `attempt` + 1 (1-based)."""
    asked = retry_after(e)
    if asked is not None:
        return min(MAX_RETRY_AFTER_S, asked)
    return min(MAX_BACKOFF_S, first_s * float(2 ** min(attempt - 1, 8)))


async def until_answered(
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    first_backoff_s: float = 0.2,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`call()`'s result, asked again for as long as the API does not answer; an answer that is an
    error (ApiException below 500 but 429) or a bug is raised at once."""
    attempt = 0
    while True:
        try:
            result = await call()
        except Exception as e:
            why = unanswered(e)
            if not why:
                raise
            attempt += 1
            if attempt == 1:
                log.warning("Kubernetes API not answering; asking again", what=what, error=why)
            await sleep(wait_s(attempt, e, first_backoff_s))
            continue
        if attempt:
            log.info("Kubernetes API answered again", what=what, retries=attempt)
        return result
