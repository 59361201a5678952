"""Events: core/v1 and events.k8s.io/v1 are one stored object (kept in the core shape); the
validation each API applies on create, as the transcripts show.
"""

from __future__ import annotations

import re
from typing import Any

from kubefake.resources import ApiError, Resource, invalid

Obj = dict[str, Any]
_QUALIFIED = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_NAME_PART = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_RENAMES = (
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
)


def _reporting(causes: list[tuple[str, str, str]], field: str, value: str) -> None:
    if not value:
        causes.append(("FieldValueRequired", "Required value", field))
        causes.append(("FieldValueInvalid", 'Invalid value: "": name part must be non-empty', field))
        causes.append(("FieldValueInvalid", f'Invalid value: "": {_NAME_PART}', field))
    elif not _QUALIFIED.match(value):
        causes.append(("FieldValueInvalid", f'Invalid value: "{value}": {_NAME_PART}', field))


def validate_core(res: Resource, obj: Obj, namespace: str) -> None:
    name = obj["metadata"].get("name", "")
    involved = obj.get("involvedObject") or {}
    if involved.get("namespace") and involved["namespace"] != namespace:
        raise invalid(
            res,
            name,
            [
                (
                    "FieldValueInvalid",
                    f'Invalid value: "{involved["namespace"]}": does not match event.namespace',
                    "involvedObject.namespace",
                )
            ],
            kind="Event",
        )
    if obj.get("eventTime"):
        causes: list[tuple[str, str, str]] = []
        _reporting(causes, "reportingComponent", obj.get("reportingComponent", ""))
        if not obj.get("reportingInstance"):
            causes.append(("FieldValueRequired", "Required value", "reportingInstance"))
        if not obj.get("action"):
            causes.append(("FieldValueRequired", "Required value", "action"))
        if causes:
            raise invalid(res, name, causes, kind="Event")


def validate_v1(res: Resource, obj: Obj) -> None:
    name = obj["metadata"].get("name", "")
    causes: list[tuple[str, str, str]] = []
    kind = obj.get("type", "")
    if not obj.get("eventTime"):
        causes.append(("FieldValueRequired", "Required value", "eventTime"))
    if kind not in ("Normal", "Warning"):
        causes.append(("FieldValueInvalid", f'Invalid value: "": has invalid value: {kind}', "type"))
    if causes:
        raise invalid(res, name, causes, kind="Event")
    _reporting(causes, "reportingController", obj.get("reportingController", ""))
    for f in ("reportingInstance", "action", "reason"):
        if not obj.get(f):
            causes.append(("FieldValueRequired", "Required value", f))
    if causes:
        raise invalid(res, name, causes, kind="Event")


def from_events_v1(obj: Obj) -> Obj:
    out = {k: v for k, v in obj.items() if k not in dict(_RENAMES)}
    for new, old in _RENAMES:
        if new in obj:
            out[old] = obj[new]
    out["apiVersion"], out["kind"] = "v1", "Event"
    out.setdefault("involvedObject", {})
    return out


def to_events_v1(obj: Obj) -> Obj:
    back = {old: new for new, old in _RENAMES}
    out = {back.get(k, k): v for k, v in obj.items()}
    out["apiVersion"], out["kind"] = "events.k8s.io/v1", "Event"
    return out


def fill_core_defaults(obj: Obj) -> None:
    obj.setdefault("involvedObject", {})
    obj.setdefault("source", {})
    for f in ("firstTimestamp", "lastTimestamp", "eventTime"):
        obj.setdefault(f, None)
    obj.setdefault("reportingComponent", "")
    obj.setdefault("reportingInstance", "")


def check(res: Resource, obj: Obj, namespace: str) -> Obj:
    """Validate an Event for `res`'s API and return it in the stored (core) shape."""
    if res.group == "events.k8s.io":
        validate_v1(res, obj)
        obj = from_events_v1(obj)
    else:
        validate_core(res, obj, namespace)
    fill_core_defaults(obj)
    return obj


__all__ = ["ApiError", "check", "to_events_v1"]
