"""Admission of one user-supplied object into local mode's store, shared by `chaosbus apply` and the
direct triggers (`chaos.trigger.apply`): decode and validate it with the CRD decoder, default its
namespace, and normalise it to what the store keeps. Pure.
"""

from __future__ import annotations

from typing import Any

from chaosbus.common.crd import ORCHESTRATED, decode_any, decode_object, encode_object
from chaosbus.common.crd.errors import InvalidObject

Obj = dict[str, Any]


def admit(doc: Obj, namespace: str | None = None) -> Obj:
    """The object as stored; raises InvalidObject whose errors are `field: message`."""
    if doc.get("kind") == "Namespace":
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": _namespace_meta(doc.get("metadata") or {})}
    if namespace and not (doc.get("metadata") or {}).get("namespace"):
        doc = {**doc, "metadata": {**(doc.get("metadata") or {}), "namespace": namespace}}
    if doc.get("kind") in ORCHESTRATED:  # run by the scheduler; checked structurally here, fully when run
        meta = doc.get("metadata") or {}
        return decode_any({**doc, "metadata": {**meta, "namespace": meta.get("namespace") or "default"}})
    return encode_object(decode_object(doc))


def _namespace_meta(meta: Obj) -> Obj:
    if not meta.get("name"):
        raise InvalidObject(["metadata.name: required"])
    return {k: v for k, v in meta.items() if k in ("name", "labels", "annotations")}
