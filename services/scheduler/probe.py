"""StatusCheck's probes, the edge of statuscheck.py: HTTP (one request with the spec's method, headers,
body and timeout, judged by `criteria.statusCode`) and Prometheus (one instant query to the
endpoint's HTTP API, judged by the comparator in crd/statuscheck.py). Blocking stdlib HTTP runs in
a worker thread so a slow endpoint never stalls the scheduler's event loop.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from dataclasses import dataclass

from chaosbus.common import promquery
from chaosbus.common.crd.orchestration import StatusCheckHTTP, StatusCheckPrometheus
from chaosbus.scheduler.statuscheck import status_code_range


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # the status code, or why there was none (timeout, refused, ...)


def probe_sync(http: StatusCheckHTTP, timeout_s: float) -> ProbeResult:
    low, high = status_code_range(http.criteria.status_code if http.criteria else "200")
    request = urllib.request.Request(
        http.url, method=http.method, data=http.body.encode() if http.method == "POST" else None
    )
    for name, values in http.headers.items():
        request.add_header(name, ", ".join(values))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - the user's URL is the point
            code = int(response.status)
    except urllib.error.HTTPError as e:  # 4xx/5xx still carry a code the criteria may accept
        code = int(e.code)
    except (urllib.error.URLError, OSError, ValueError) as e:
        return ProbeResult(ok=False, detail=f"no response: {getattr(e, 'reason', e)}")
    return ProbeResult(ok=low <= code <= high, detail=str(code))


async def probe(http: StatusCheckHTTP, timeout_s: float) -> ProbeResult:
    return await asyncio.to_thread(probe_sync, http, timeout_s)


async def query(prom: StatusCheckPrometheus, timeout_s: float) -> ProbeResult:
    ok, detail = await asyncio.to_thread(promquery.check, prom, timeout_s)
    return ProbeResult(ok=ok, detail=detail)
