"""The wire format's decoders: one per type, built once, whether by a service's start (`prepare`)
or by the first message of that type."""

from __future__ import annotations

from chaosbus.common import messages as m
from chaosbus.common import wire


def test_a_prepared_decoder_is_the_one_every_decode_then_uses() -> None:
    lease = m.NodeLease(node="n1", holder="s", issued_at=1.0, ttl_s=15.0)
    wire.prepare(m.NodeLease)
    built = dict(wire._decoders)
    assert wire.decode(wire.encode(lease), m.NodeLease) == lease
    wire.prepare(m.NodeLease)
    assert wire._decoders == built  # nothing built again, by the decode or a second prepare
