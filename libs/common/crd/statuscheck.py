"""StatusCheck validation, shared by admission and the scheduler, and the Prometheus check's pure
half: the comparison of a PromQL result against `comparator` (chaosbus's extension, shaped like
Litmus's promProbe). Pure: no HTTP here (the scheduler's probe.py does the request).

A Prometheus check passes when the query returns at least one sample and every sample satisfies
`<value> <criteria> comparator.value`; no data, a NaN or a failed query is a failure (a guard that
cannot see its objective must not report it met).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from chaosbus.common.crd.orchestration import StatusCheckPrometheus, StatusCheckSpec
from chaosbus.common.durations import parse_duration

MODES = ("Synchronous", "Continuous")
TYPES = ("HTTP", "Prometheus")
CRITERIA: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}
MAX_QUERY = 4096


class InvalidCheck(ValueError):
    """A StatusCheck spec that cannot run; the message names the field."""


def status_code_range(text: str) -> tuple[int, int]:
    """`criteria.statusCode`: one code (`200`) or an inclusive range (`200-299`)."""
    low, sep, high = text.strip().partition("-")
    try:
        lo = int(low)
        hi = int(high) if sep else lo
    except ValueError:
        raise InvalidCheck(
            f"spec.http.criteria.statusCode: {text!r} is neither a code (200) nor a range (200-299)"
        ) from None
    # Chaos Mesh's webhook accepts any code in 1..999; a reversed range (it would match nothing there) is refused.
    if not 0 < lo <= hi < 1000:
        raise InvalidCheck(f"spec.http.criteria.statusCode: {text!r} is not a code or an ascending range within 1-999")
    return lo, hi


def validate(spec: StatusCheckSpec, field: str = "spec") -> None:
    """Chaos Mesh's webhook rules for a StatusCheck, plus what chaosbus needs to run one."""
    if spec.mode not in MODES:
        raise InvalidCheck(f"{field}.mode: {spec.mode!r} is not Synchronous or Continuous")
    if spec.type not in TYPES:
        raise InvalidCheck(f"{field}.type: {spec.type!r} is not supported (HTTP or Prometheus)")
    if spec.type == "HTTP":
        _validate_http(spec, field)
    else:
        validate_prometheus(spec.prometheus, f"{field}.prometheus")
    for name, value, low in (
        ("timeoutSeconds", spec.timeout_seconds, 1),
        ("intervalSeconds", spec.interval_seconds, 1),
        ("failureThreshold", spec.failure_threshold, 1),
        ("successThreshold", spec.success_threshold, 1),
        ("recordsHistoryLimit", spec.records_history_limit, 1),
    ):
        if value < low:
            raise InvalidCheck(f"{field}.{name}: must be at least {low}, got {value}")
    if spec.records_history_limit > 1000:
        raise InvalidCheck(f"{field}.recordsHistoryLimit: at most 1000, got {spec.records_history_limit}")
    if spec.duration:
        try:
            parse_duration(spec.duration)
        except ValueError as e:
            raise InvalidCheck(f"{field}.duration: {e}") from None


def _validate_http(spec: StatusCheckSpec, field: str) -> None:
    if spec.http is None or not spec.http.url:
        raise InvalidCheck(f"{field}.http.url: required for an HTTP check")
    if not spec.http.url.startswith(("http://", "https://")):
        raise InvalidCheck(f"{field}.http.url: {spec.http.url!r} must start with http:// or https://")
    if spec.http.method not in ("GET", "POST"):
        raise InvalidCheck(f"{field}.http.method: {spec.http.method!r} is not GET or POST")
    status_code_range(spec.http.criteria.status_code if spec.http.criteria else "")


def validate_prometheus(prom: StatusCheckPrometheus | None, field: str) -> None:
    """The Prometheus block: an http(s) endpoint, a non-empty bounded query, a known criteria, a finite value."""
    if prom is None:
        raise InvalidCheck(f"{field}: required for a Prometheus check")
    if not prom.endpoint.startswith(("http://", "https://")):
        raise InvalidCheck(f"{field}.endpoint: {prom.endpoint!r} must start with http:// or https://")
    if not prom.query.strip():
        raise InvalidCheck(f"{field}.query: required")
    if len(prom.query) > MAX_QUERY:
        raise InvalidCheck(f"{field}.query: at most {MAX_QUERY} characters, got {len(prom.query)}")
    if prom.comparator is None:
        raise InvalidCheck(f"{field}.comparator: required (criteria and value)")
    if prom.comparator.criteria not in CRITERIA:
        raise InvalidCheck(
            f"{field}.comparator.criteria: {prom.comparator.criteria!r} is not one of {' '.join(CRITERIA)}"
        )
    if not math.isfinite(prom.comparator.value):
        raise InvalidCheck(f"{field}.comparator.value: must be a finite number")


def judge(prom: StatusCheckPrometheus, data: dict[str, Any]) -> tuple[bool, str]:
    """A Prometheus API `data` object (instant query) against the comparator: (passed, why)."""
    assert prom.comparator is not None
    compare, want = CRITERIA[prom.comparator.criteria], prom.comparator.value
    kind, result = data.get("resultType"), data.get("result")
    if kind in ("scalar", "string"):
        samples: list[tuple[dict[str, Any], Any]] = [({}, result)]
    elif kind == "vector" and isinstance(result, list):
        samples = [(r.get("metric") or {}, r.get("value")) for r in result if isinstance(r, dict)]
    else:
        return False, f"unsupported result type {kind!r} (an instant vector or scalar is needed)"
    if not samples:
        return False, "no data"
    failed = []
    for labels, value in samples:
        try:
            got = float(value[1]) if isinstance(value, list) and len(value) == 2 else math.nan
        except (TypeError, ValueError):
            got = math.nan
        if math.isnan(got) or not compare(got, want):
            failed.append(f"{_series(labels)}={got:g}")
    verdict = f"{prom.comparator.criteria} {want:g}"
    if failed:
        return False, f"{len(failed)} of {len(samples)} sample(s) not {verdict}: {', '.join(failed[:3])}"
    return True, f"{len(samples)} sample(s) {verdict}"


def _series(labels: dict[str, Any]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{{{inner}}}"
