"""Whether the Kubernetes API answers, for the /readyz of the services that work through it (the
`--kube` watcher, the cluster injector, the recorder in cluster mode, the auth service): ready is
decided by the API answering now, not by its having answered at start. A GET /version (tiny,
allowed to every authenticated client) every half of the bound while the API answers; after a miss,
again every tenth of it, so the way back to ready is quick. No liveness probe may read this: an API
outage must not restart the pods.

A 401 is a miss: the server is up but refuses this service's credentials (a revoked or expired
token), so every request the service makes fails as surely as in an outage, and its pod should say
so. A 403 is an answer: the credentials were accepted, and /version being forbidden is a cluster's
choice about anonymous discovery (some remove system:public-info-viewer), not this service's fault.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from chaosbus.common import settings
from chaosbus.common.service import Readiness

PART = "kubernetes"  # the readiness part


class ApiHealth:
    """The pure account: when the API last answered, what the last miss was, whether a probe is due."""

    def __init__(self, unanswered_s: float, now: float) -> None:
        self.unanswered_s = unanswered_s
        self.answered_at = now  # the start counts: the service has just read its kubeconfig
        self.probed_at: float | None = None
        self.error = ""

    def answered(self, now: float) -> None:
        self.answered_at, self.probed_at, self.error = now, now, ""

    def missed(self, now: float, error: str) -> None:
        self.probed_at, self.error = now, error

    def probe_due(self, now: float) -> bool:
        if self.probed_at is None:
            return True
        every = self.unanswered_s / 10 if self.error else self.unanswered_s / 2
        return now - self.probed_at >= every

    def unready(self, now: float) -> str:
        """ "" while the API answered within the bound, else one line saying for how long it has not."""
        silent = now - self.answered_at
        if silent < self.unanswered_s:
            return ""
        why = f" ({self.error})" if self.error else ""
        return f"Kubernetes API unanswered for {silent:.0f} s{why}"


async def probe(api: client.ApiClient, timeout_s: float) -> str:
    """ "" if the API server answered (any HTTP status below 500 but 401: it is there, and takes
    our credentials), else why not. The body is not decoded: what a server says its version is must
    not matter here."""
    try:
        # Unread, the answer is the bare HTTP response (the generated signature says VersionInfo).
        resp: Any = await client.VersionApi(api).get_code(_preload_content=False, _request_timeout=timeout_s)
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        return str(e) or type(e).__name__
    except Exception as e:  # whatever else the client raises is a miss too, never the end of the service
        return f"{type(e).__name__}: {e}"
    status = int(resp.status)
    resp.release()
    return verdict(status)


def verdict(status: int) -> str:
    """What one HTTP status from GET /version says about the API: "" (answered) or the miss."""
    if status == 401:
        return "HTTP 401: the API server refuses this service's credentials"
    return "" if status < 500 else f"HTTP {status}"


async def watch_api(api: client.ApiClient, ready: Readiness, unanswered_s: float | None = None) -> None:
    """Keep `ready`'s Kubernetes part current, forever."""
    bound = unanswered_s if unanswered_s is not None else settings.current().kube_unanswered_s
    health = ApiHealth(bound, time.monotonic())
    tick = min(1.0, bound / 10)
    while True:
        now = time.monotonic()
        if health.probe_due(now):
            missed = await probe(api, timeout_s=bound / 4)
            now = time.monotonic()
            if missed:
                health.missed(now, missed)
            else:
                health.answered(now)
        why = health.unready(now)
        if why:
            ready.pending(PART, why)
        else:
            ready.done(PART)
        await asyncio.sleep(tick)
