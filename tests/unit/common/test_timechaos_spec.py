"""TimeChaos admission: Chaos Mesh's fields, its defaults, and every field bounded with its name."""

from __future__ import annotations

from typing import Any

import pytest

from chaosbus.common.crd import InvalidObject, decode_object
from chaosbus.common.crd.timechaos import CLOCK_IDS, TimeChaosSpec


def decode(**spec: Any) -> TimeChaosSpec:
    spec.setdefault("mode", "all")
    spec.setdefault("selector", {"labelSelectors": {"app": "web"}})
    obj = decode_object(
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "TimeChaos",
            "metadata": {"name": "t", "namespace": "default"},
            "spec": spec,
        }
    )
    assert isinstance(obj.spec, TimeChaosSpec)
    return obj.spec


def errors(**spec: Any) -> list[str]:
    with pytest.raises(InvalidObject) as info:
        decode(**spec)
    return info.value.errors


def test_defaults_select_clock_realtime() -> None:
    spec = decode(timeOffset="-1h")
    assert spec.clock_ids == ["CLOCK_REALTIME"] and spec.clock_mask() == 1 and spec.offset_ns() == -3600 * 10**9


def test_every_clock_chaos_mesh_accepts() -> None:
    spec = decode(timeOffset="10m", clockIds=list(CLOCK_IDS))
    assert spec.clock_mask() == (1 << 12) - 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "spec.timeOffset: is required"),
        ({"timeOffset": "soon"}, "spec.timeOffset: invalid duration 'soon'"),
        ({"timeOffset": "-900000h"}, "spec.timeOffset: must be within"),
        ({"timeOffset": "1h", "clockIds": ["CLOCK_WALL"]}, "spec.clockIds[0]: unknown clock 'CLOCK_WALL'"),
        ({"timeOffset": "1h", "clockIds": ["CLOCK_REALTIME"] * 13}, "spec.clockIds: at most 12 clocks"),
        ({"timeOffset": "1h", "containerNames": ["Bad_Name"]}, "spec.containerNames[0]: must be a DNS-1123 label"),
        ({"timeOffset": "1h", "containerNames": [f"c{i}" for i in range(65)]}, "spec.containerNames: at most 64"),
        ({"timeOffset": "1h", "clockIDs": ["CLOCK_REALTIME"]}, "clockIDs"),  # unknown field, named
    ],
)
def test_bad_fields_are_refused_by_name(spec: dict[str, Any], message: str) -> None:
    found = errors(**spec)
    assert any(message in e for e in found), found
