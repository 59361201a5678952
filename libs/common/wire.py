"""The base of every wire message: a frozen msgspec Struct that omits defaults, so messages stay
small and new fields (with defaults) never break an older reader.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


class Message(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Base of wire messages."""


_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def encode(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes, kind: type[T]) -> T:
    """`data` as `kind`, with one decoder per type built once and kept."""
    result: T = _decoder(kind).decode(data)
    return result


def prepare(*kinds: type[Any]) -> None:
    """Build the decoders of `kinds` now (a service's start), so that its first message of each
    does not wait for one: a NodeCommand's, with the fault union, takes about 0.3 ms to build."""
    for kind in kinds:
        _decoder(kind)


def _decoder(kind: type[T]) -> msgspec.json.Decoder[T]:
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.json.Decoder(kind)
    return dec
