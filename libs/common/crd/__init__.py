"""msgspec models of `chaos-mesh.org/v1alpha1`: shared pieces, per-kind specs, status, decoding."""

from chaosbus.common.crd import kinds
from chaosbus.common.crd.errors import InvalidObject
from chaosbus.common.crd.objects import (
    API_VERSION,
    CHAOS_KINDS,
    ChaosObject,
    decode_documents,
    decode_object,
    decode_object_json,
    encode_object,
    plural_of,
)
from chaosbus.common.crd.registry import ACCEPTED, ALL_KINDS, NOT_EXECUTED, ORCHESTRATED, WATCHED_KINDS, decode_any

__all__ = [
    "ACCEPTED",
    "ALL_KINDS",
    "NOT_EXECUTED",
    "ORCHESTRATED",
    "decode_any",
    "API_VERSION",
    "CHAOS_KINDS",
    "ChaosObject",
    "InvalidObject",
    "WATCHED_KINDS",
    "decode_documents",
    "decode_object",
    "decode_object_json",
    "encode_object",
    "kinds",
    "plural_of",
]
