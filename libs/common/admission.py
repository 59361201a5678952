"""Admission of one user-supplied object into local mode's store, shared by `chaosbus apply` and the
direct triggers (`chaos.trigger.apply`): decode and validate it with the CRD decoder, default its
namespace, and normalise it to what the store keeps. Pure.
"""

from __future__ import annotations

from typing import Any

import msgspec

from chaosbus.common.crd import (
    ALL_KINDS,
    CHAOS_KINDS,
    bounds,
    decode_any,
    decode_object,
    encode_object,
    kinds,
    sctemplates,
)
from chaosbus.common.crd.errors import InvalidObject, Problems
from chaosbus.common.crd.meta import RECORDS_FINALIZER

Obj = dict[str, Any]


def admit(doc: Obj, namespace: str | None = None) -> Obj:
    """The object as stored; raises InvalidObject whose errors are `field: message`, whatever the
    document holds (bounds.py: depth, sizes, numbers, names).
    """
    if not isinstance(doc, dict):
        raise InvalidObject([f"object: must be a mapping, got {type(doc).__name__}"])
    bounds.checked_tree(doc, "")
    meta = bounds.metadata_of(doc)
    if doc.get("kind") == "Namespace":
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": _namespace_meta(meta)}
    if namespace and not meta.get("namespace"):
        meta = {**meta, "namespace": namespace}
        doc = {**doc, "metadata": meta}
    kind = str(doc.get("kind"))
    if kind == "ConfigMap":
        return _template_configmap(doc, meta)
    if kind in ALL_KINDS and kind not in CHAOS_KINDS:
        # Orchestration kinds (run by the scheduler) and accepted ones (marked NotSupported): checked
        # as Chaos Mesh's webhook would (a Schedule's cron and embedded spec fully), stored as given.
        scoped = {"namespace": meta.get("namespace") or "default"} if ALL_KINDS[kind].namespaced else {}
        return _fits(decode_any({**doc, "metadata": {**meta, **scoped}}))
    return _fits(with_records_finalizer(encode_object(decode_object(doc))))


def with_records_finalizer(obj: Obj) -> Obj:
    """An experiment chaosbus runs is stored with the `chaos-mesh/records` finalizer already on it,
    so the scheduler may act on its first event: no write by the recorder and no echo of that write
    stand between an apply and its commands. Objects it does not run (an accepted kind, a remote
    cluster's experiment) get none: nothing will ever need recovering.
    """
    if kinds.not_run(str(obj.get("kind")), obj.get("spec") or {}) is not None:
        return obj
    meta = obj.get("metadata") or {}
    finalizers = list(meta.get("finalizers") or [])
    if RECORDS_FINALIZER in finalizers:
        return obj
    return {**obj, "metadata": {**meta, "finalizers": [*finalizers, RECORDS_FINALIZER]}}


def _template_configmap(doc: Obj, meta: Obj) -> Obj:
    """Local mode keeps one kind of ConfigMap: Chaos Mesh's StatusCheck templates, checked as a
    StatusCheck spec would be.
    """
    if doc.get("apiVersion") != "v1":
        raise InvalidObject([f"apiVersion: expected v1, got {doc.get('apiVersion')!r}"])
    cm = {**doc, "metadata": {**meta, "namespace": meta.get("namespace") or "default"}}
    if not sctemplates.is_template(cm):
        raise InvalidObject(
            [
                f"kind: ConfigMap: local mode keeps only StatusCheck templates (labels "
                f"{sctemplates.TYPE_LABEL}=StatusCheck, {sctemplates.MANAGED_BY_LABEL}="
                f"{sctemplates.MANAGED_BY}, annotation {sctemplates.NAME_ANNOTATION}=NAME, "
                f"named {sctemplates.PREFIX}NAME)"
            ]
        )
    problems = Problems()
    bounds.dns_label(problems, "metadata.namespace", cm["metadata"]["namespace"])
    bounds.dns_subdomain(problems, "metadata.name", cm["metadata"]["name"])
    unknown = sorted(set(cm) - {"apiVersion", "kind", "metadata", "data"})
    for field in unknown:
        problems.add(field, "unknown field")
    problems.raise_if_any()
    sctemplates.read(cm)
    return _fits({k: cm[k] for k in ("apiVersion", "kind", "metadata", "data") if k in cm})


def _fits(obj: Obj) -> Obj:
    """The stored object, with its status to come, must fit one NATS message (KV value, event)."""
    size = len(msgspec.json.encode(obj))
    if size > bounds.MAX_OBJECT_BYTES:
        raise InvalidObject(
            [
                f"object: {size} bytes as stored, more than {bounds.MAX_OBJECT_BYTES} (its status "
                "and the event carrying it must fit one NATS message)"
            ]
        )
    return obj


def _namespace_meta(meta: Obj) -> Obj:
    if not meta.get("name"):
        raise InvalidObject(["metadata.name: required"])
    problems = Problems()
    bounds.dns_label(problems, "metadata.name", meta["name"])
    problems.raise_if_any()
    return {k: v for k, v in meta.items() if k in ("name", "labels", "annotations")}
