"""decode_object_json: the same object as decode_object, with or without its status, and the same
field-naming errors for bad input.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from chaosbus.common.crd import InvalidObject, decode_object, decode_object_json
from chaosbus.common.crd.objects import decode_metadata

DOC: dict[str, Any] = {
    "apiVersion": "chaos-mesh.org/v1alpha1",
    "kind": "PodChaos",
    "metadata": {"name": "kill", "namespace": "ns", "uid": "u1", "creationTimestamp": "2026-11-22T05:00:00Z"},
    "spec": {"action": "pod-kill", "mode": "one", "selector": {"labelSelectors": {"app": "web"}}},
    "status": {
        "experiment": {
            "containerRecords": [{"id": "ns/web-0", "selectorKey": ".", "phase": "Injected", "injectedCount": 1}]
        }
    },
}


def test_with_status_equals_decode_object() -> None:
    assert decode_object_json(msgspec.json.encode(DOC)) == decode_object(DOC)


def test_without_status_keeps_everything_else_and_drops_only_the_status() -> None:
    full = decode_object(DOC)
    lean = decode_object_json(msgspec.json.encode(DOC), with_status=False)
    assert lean.status is None and full.status is not None
    assert (lean.metadata, lean.spec, lean.kind) == (full.metadata, full.spec, full.kind)


@pytest.mark.parametrize("with_status", [True, False])
def test_bad_input_names_the_field(with_status: bool) -> None:
    bad = {**DOC, "spec": {**DOC["spec"], "mode": "sometimes"}}
    with pytest.raises(InvalidObject, match="mode"):
        decode_object_json(msgspec.json.encode(bad), with_status=with_status)
    with pytest.raises(InvalidObject, match="apiVersion"):
        decode_object_json(msgspec.json.encode({**DOC, "apiVersion": "v1"}), with_status=with_status)


@pytest.mark.parametrize("with_status", [True, False])
def test_not_an_object_is_refused(with_status: bool) -> None:
    with pytest.raises((InvalidObject, msgspec.DecodeError)):
        decode_object_json(b"[1, 2]", with_status=with_status)
    with pytest.raises(msgspec.DecodeError):
        decode_object_json(b"{not json", with_status=with_status)


def test_metadata_alone_of_a_large_object() -> None:
    records = [{"id": f"ns/web-{i}", "selectorKey": ".", "phase": "Injected"} for i in range(1000)]
    big = {**DOC, "status": {"experiment": {"containerRecords": records}}}
    assert decode_metadata(msgspec.json.encode(big)) == DOC["metadata"]
    assert decode_metadata(b'{"kind": "PodChaos"}') == {}


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"metadata": 3}'])
def test_metadata_of_bad_input_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_metadata(raw)
