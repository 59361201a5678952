"""Whole chaos objects: the kind registry, YAML/JSON decoding with defaults and validation, encoding."""

from __future__ import annotations

from typing import Any

import msgspec

from chaosbus.common.crd import bounds
from chaosbus.common.crd.common import PodSelectorBase
from chaosbus.common.crd.errors import InvalidObject, Problems, from_msgspec
from chaosbus.common.crd.kinds import CHAOS_KINDS as CHAOS_KINDS
from chaosbus.common.crd.kinds import plural_of as plural_of
from chaosbus.common.crd.meta import ObjectMeta
from chaosbus.common.crd.status import ChaosStatus

API_VERSION = "chaos-mesh.org/v1alpha1"

# Every executed kind's spec selects pods; its own fields are read after an isinstance check.
Spec = PodSelectorBase


class ChaosObject(msgspec.Struct, kw_only=True):
    """A decoded, defaulted and validated experiment object."""

    api_version: str = msgspec.field(name="apiVersion", default=API_VERSION)
    kind: str
    metadata: ObjectMeta
    spec: Spec
    status: ChaosStatus | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.metadata.namespace}/{self.metadata.name}"


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    """Parse multi-document YAML (or JSON) within `bounds`; empty documents are skipped. Errors name
    the line.
    """
    docs = bounds.load_yaml(text)
    for i, d in enumerate(docs):
        if not isinstance(d, dict):
            raise InvalidObject([f"document {i + 1}: expected a mapping with apiVersion and kind"])
    return docs


class _WithoutStatus(msgspec.Struct):
    """The parts of a stored object that are not its status (unknown keys, status included, skipped)."""

    apiVersion: str | None = None  # noqa: N815 - the wire name
    kind: str | None = None
    metadata: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None


class _MetadataOnly(msgspec.Struct):
    """An object's metadata; msgspec skips the rest (spec and status) without building it."""

    metadata: dict[str, Any] | None = None


_METADATA_ONLY = msgspec.json.Decoder(_MetadataOnly)


def decode_metadata(data: bytes) -> dict[str, Any]:
    """The metadata of a stored JSON object, about a hundred times cheaper than decoding a
    1,000-target experiment whole: for readers that see every status write but act on few.

    Raises:
        msgspec.DecodeError: not JSON, or not an object.
    """
    try:
        return _METADATA_ONLY.decode(data).metadata or {}
    except msgspec.ValidationError as e:
        raise msgspec.DecodeError(str(e)) from None


def decode_object_json(data: bytes, *, with_status: bool = True) -> ChaosObject:
    """`decode_object` of a JSON document. Without status it is about ten times cheaper for a
    large experiment (1,000 records: 0.56 ms instead of 5.5 ms), which matters to readers that
    see every status write but need the status only once.

    Raises:
        InvalidObject: as `decode_object`.
        msgspec.DecodeError: not JSON, or not an object.
    """
    try:
        if with_status:
            doc = msgspec.json.decode(data)
            if not isinstance(doc, dict):
                raise InvalidObject(["object: not a JSON object"])
            return decode_object(doc)
        parts = msgspec.json.decode(data, type=_WithoutStatus)
    except msgspec.ValidationError as e:
        raise from_msgspec(e, "") from None
    except RecursionError:  # msgspec stops at Python's recursion limit, well past bounds.MAX_DEPTH
        raise InvalidObject([f"object: nested deeper than {bounds.MAX_DEPTH} levels"]) from None
    return decode_object({k: v for k, v in msgspec.structs.asdict(parts).items() if v is not None})


def decode_object(doc: dict[str, Any], *, default_namespace: str = "default") -> ChaosObject:
    """Decode one experiment the way Chaos Mesh's webhooks would admit it (defaults, then validation)."""
    kind = doc.get("kind")
    if not isinstance(kind, str) or kind not in CHAOS_KINDS:
        raise InvalidObject([f"kind: unknown kind {kind!r}; expected one of {', '.join(CHAOS_KINDS)}"])
    api_version = doc.get("apiVersion")
    if api_version != API_VERSION:
        raise InvalidObject([f"apiVersion: expected {API_VERSION}, got {api_version!r}"])
    meta = _metadata(doc, default_namespace)
    raw_spec = doc.get("spec") or {}
    bounds.checked_tree(raw_spec, "spec")
    try:
        spec = msgspec.convert(raw_spec, CHAOS_KINDS[kind])
    except msgspec.ValidationError as e:
        raise from_msgspec(e, "spec") from None
    spec = spec.defaulted(meta.namespace)
    spec.validate()
    status = None
    if doc.get("status"):
        try:
            status = msgspec.convert(doc["status"], ChaosStatus)
        except msgspec.ValidationError as e:
            raise from_msgspec(e, "status") from None
    return ChaosObject(api_version=API_VERSION, kind=kind, metadata=meta, spec=spec, status=status)


def _metadata(doc: dict[str, Any], default_namespace: str) -> ObjectMeta:
    """metadata converted and checked: a DNS-1123 name and namespace (they become KV keys and
    subject tokens, where `a.b` in a namespace would meet another object's key), bounded values.
    """
    raw = bounds.metadata_of(doc)
    bounds.checked_tree(raw, "metadata")
    try:
        meta = msgspec.convert(raw, ObjectMeta)
    except msgspec.ValidationError as e:
        raise from_msgspec(e, "metadata") from None
    if not meta.name:
        raise InvalidObject(["metadata.name: required"])
    problems = Problems()
    bounds.dns_subdomain(problems, "metadata.name", meta.name)
    if meta.namespace:
        bounds.dns_label(problems, "metadata.namespace", meta.namespace)
    problems.raise_if_any()
    if not meta.namespace:
        meta = msgspec.structs.replace(meta, namespace=default_namespace)
    return meta


def decode_documents(text: str, *, default_namespace: str = "default") -> list[ChaosObject]:
    """Decode every document of a YAML stream; the first bad one raises, naming its position."""
    out = []
    for i, doc in enumerate(load_yaml_documents(text)):
        try:
            out.append(decode_object(doc, default_namespace=default_namespace))
        except InvalidObject as e:
            prefix = f"document {i + 1} ({doc.get('kind')}/{bounds.name_of(doc)})"
            raise InvalidObject([f"{prefix}: {err}" for err in e.errors]) from None
    return out


def encode_object(obj: ChaosObject) -> dict[str, Any]:
    """The object as plain JSON-able data, in Kubernetes' field spelling."""
    out: dict[str, Any] = msgspec.to_builtins(obj)
    if out.get("status") is None:
        out.pop("status", None)
    return out
