"""One PromQL instant query against a Prometheus HTTP API, judged by a StatusCheck comparator
(crd/statuscheck.judge): what a `type: Prometheus` StatusCheck probes and what the SLO guard polls.
Blocking stdlib HTTP; callers run it in a worker thread.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from chaosbus.common.crd import statuscheck
from chaosbus.common.crd.orchestration import StatusCheckPrometheus

MAX_RESPONSE = 4 * 1024 * 1024  # a query answering more than this is refused, not read into memory


def check(prom: StatusCheckPrometheus, timeout_s: float) -> tuple[bool, str]:
    """(passed, why). An unreachable endpoint, a refused query or an unreadable answer is a failure."""
    url = f"{prom.endpoint.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": prom.query})
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - the user's endpoint
            raw = response.read(MAX_RESPONSE + 1)
    except urllib.error.HTTPError as e:  # 400/422: a bad query; the body says why
        return False, f"query failed: HTTP {e.code}: {_error_of(e.read(4096))}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return False, f"no response: {getattr(e, 'reason', e)}"
    if len(raw) > MAX_RESPONSE:
        return False, f"response larger than {MAX_RESPONSE} bytes"
    try:
        body = json.loads(raw)
    except ValueError:
        return False, "response is not JSON"
    if not isinstance(body, dict) or body.get("status") != "success" or not isinstance(body.get("data"), dict):
        return False, f"query failed: {_error_of(raw)}"
    return statuscheck.judge(prom, body["data"])


def _error_of(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw[:200].decode(errors="replace")
    return str(body.get("error") or body)[:200] if isinstance(body, dict) else str(body)[:200]
