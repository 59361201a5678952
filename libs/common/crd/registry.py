"""Admission of every `chaos-mesh.org/v1alpha1` kind chaosbus serves a CRD for, as its descriptor
(`crd.kinds`) says: executed kinds fully, the others structurally.

An accepted kind decodes and validates structurally and is stored unchanged; the recorder marks it
`Supported=False` (reason NotSupported) instead of running it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from chaosbus.common.crd import bounds, orchestration
from chaosbus.common.crd.errors import InvalidObject, Problems, from_msgspec
from chaosbus.common.crd.kinds import ACCEPTED, CHAOS_KINDS, KINDS, NOT_EXECUTED, ORCHESTRATED, WATCHED_KINDS, Kind
from chaosbus.common.crd.objects import API_VERSION, decode_object

KindInfo = Kind
ALL_KINDS = KINDS


# Chaos Mesh's 23 CRDs (HelloWorldChaos is chaosbus's tutorial kind on top).
CHAOS_MESH_KINDS = tuple(k for k, info in KINDS.items() if info.chaos_mesh)


__all__ = [
    "ACCEPTED",
    "ALL_KINDS",
    "CHAOS_KINDS",
    "NOT_EXECUTED",
    "ORCHESTRATED",
    "WATCHED_KINDS",
    "KindInfo",
    "CHAOS_MESH_KINDS",
    "decode_accepted",
    "decode_any",
]


def decode_accepted(doc: dict[str, Any]) -> dict[str, Any]:
    """Check an object of an accepted (not executed) kind structurally; returns it unchanged."""
    kind = doc.get("kind")
    info = ACCEPTED.get(str(kind))
    if info is None:
        raise InvalidObject([f"kind: unknown kind {kind!r}"])
    if doc.get("apiVersion") != API_VERSION:
        raise InvalidObject([f"apiVersion: expected {API_VERSION}, got {doc.get('apiVersion')!r}"])
    meta = bounds.metadata_of(doc)
    bounds.checked_tree(meta, "metadata")
    bounds.checked_tree(doc.get("spec"), "spec")
    if not meta.get("name"):
        raise InvalidObject(["metadata.name: required"])
    problems = Problems()
    bounds.dns_subdomain(problems, "metadata.name", meta["name"])
    if meta.get("namespace"):
        bounds.dns_label(problems, "metadata.namespace", meta["namespace"])
    problems.raise_if_any()
    try:
        spec = msgspec.convert(doc.get("spec") or {}, info.spec)
    except msgspec.ValidationError as e:
        raise from_msgspec(e, "spec") from None
    if isinstance(spec, orchestration.StatusCheckSpec):
        from chaosbus.common.crd import statuscheck

        try:
            statuscheck.validate(spec)
        except statuscheck.InvalidCheck as e:
            raise InvalidObject([str(e)]) from None
    if isinstance(spec, orchestration.ScheduleSpec):
        from chaosbus.common.crd import schedule

        if found := schedule.problems(spec):
            raise InvalidObject(found)
    return doc


def decode_any(doc: dict[str, Any], *, default_namespace: str = "default") -> dict[str, Any]:
    """Any chaos-mesh.org kind as it would be admitted: executable kinds fully (defaults and
    validation), accepted kinds structurally. Returns the object as plain data.
    """
    if doc.get("kind") in CHAOS_KINDS:
        from chaosbus.common.crd.objects import encode_object

        return encode_object(decode_object(doc, default_namespace=default_namespace))
    return decode_accepted(doc)
