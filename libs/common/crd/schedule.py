"""Schedule admission: the checks Chaos Mesh's webhook makes (cron syntax, `type` with exactly its
embedded object, the embedded spec valid for its kind, limits), shared by `chaosbus apply` and the
scheduler (which records them in status when a Schedule arrives without going through apply).
"""

from __future__ import annotations

from typing import Any

import msgspec

from chaosbus.common import cron
from chaosbus.common.crd.errors import InvalidObject, from_msgspec
from chaosbus.common.crd.orchestration import EMBEDDED_CHAOS_KEYS, ScheduleSpec

CONCURRENCY_POLICIES = ("Forbid", "Allow")
# Kind -> embedded key, case-insensitively: `physicalmachineChaos` keeps Chaos Mesh's lower-case m.
_BY_LOWER = {k.lower(): k for k in (*EMBEDDED_CHAOS_KEYS, "workflow")}


def embedded_key(kind: str) -> str | None:
    """The spec key that holds an embedded object of `kind` (None: not a kind a Schedule can spawn)."""
    return _BY_LOWER.get(kind.lower())


def embedded(spec: ScheduleSpec) -> tuple[str, dict[str, Any]]:
    """(kind, spec of the object to spawn); call on a Schedule that passed `problems`."""
    key = embedded_key(spec.type)
    assert key is not None
    raw = msgspec.to_builtins(spec)
    return spec.type, dict(raw.get(key) or {})


def problems(spec: ScheduleSpec) -> list[str]:
    """Every reason this Schedule cannot run, as `spec.field: message` lines (empty: it can)."""
    found: list[str] = []
    if not spec.schedule:
        found.append("spec.schedule: required (cron, @every <duration> or a descriptor such as @hourly)")
    else:
        try:
            cron.parse(spec.schedule)
        except cron.CronError as e:
            found.append(f"spec.schedule: {e}")
    if spec.concurrency_policy not in ("", *CONCURRENCY_POLICIES):
        found.append(f"spec.concurrencyPolicy: must be Forbid or Allow, got {spec.concurrency_policy!r}")
    if spec.history_limit is not None and spec.history_limit < 1:
        found.append(f"spec.historyLimit: must be at least 1, got {spec.history_limit}")
    if spec.starting_deadline_seconds is not None and spec.starting_deadline_seconds <= 0:
        found.append(f"spec.startingDeadlineSeconds: must be positive, got {spec.starting_deadline_seconds}")
    found += _embedded_problems(spec)
    return found


def _embedded_problems(spec: ScheduleSpec) -> list[str]:
    key = embedded_key(spec.type) if spec.type else None
    if key is None:
        return [f"spec.type: must name a chaos kind or Workflow, got {spec.type!r}"]
    raw = msgspec.to_builtins(spec)
    others = sorted(k for k in _BY_LOWER.values() if k != key and raw.get(k) is not None)
    if others:
        return [f"spec.{others[0]}: type is {spec.type}, so only spec.{key} may be set"]
    body = raw.get(key)
    if body is None:
        return [f"spec.{key}: required for type {spec.type}"]
    return _kind_problems(spec.type, key, body)


def _kind_problems(kind: str, key: str, body: dict[str, Any]) -> list[str]:
    from chaosbus.common.crd.objects import API_VERSION, CHAOS_KINDS, decode_object
    from chaosbus.common.crd.registry import ACCEPTED

    if kind in CHAOS_KINDS:
        try:
            decode_object({"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "child"}, "spec": body})
        except InvalidObject as e:
            return [f"spec.{key}.{err.removeprefix('spec.')}" for err in e.errors]
        return []
    info = ACCEPTED.get(kind)
    if info is None:
        return [f"spec.type: unknown kind {kind!r}"]
    try:
        msgspec.convert(body, info.spec)
    except msgspec.ValidationError as e:
        return from_msgspec(e, f"spec.{key}").errors
    return []
