"""GolangChaos admission: the designed fields, the default action, and every bad field refused
with its name."""

from __future__ import annotations

from typing import Any

import pytest

from chaosbus.common.crd import InvalidObject, decode_object, kinds
from chaosbus.common.crd.golangchaos import GolangChaosSpec


def decode(**spec: Any) -> GolangChaosSpec:
    spec.setdefault("mode", "all")
    spec.setdefault("selector", {"labelSelectors": {"app": "web"}})
    obj = decode_object(
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "GolangChaos",
            "metadata": {"name": "g", "namespace": "default"},
            "spec": spec,
        }
    )
    assert isinstance(obj.spec, GolangChaosSpec)
    return obj.spec


def errors(**spec: Any) -> list[str]:
    with pytest.raises(InvalidObject) as info:
        decode(**spec)
    return info.value.errors


def test_sql_error_is_the_default_action_and_container_names_a_list() -> None:
    spec = decode(duration="30s", containerName=["app", "sidecar"])
    assert spec.action == "sql-error" and spec.container_names == ["app", "sidecar"]
    assert spec.duration_seconds() == 30


def test_a_workflow_step_and_a_schedule_type_of_chaosbus_own() -> None:
    info = kinds.KINDS["GolangChaos"]
    assert kinds.STEP_KEYS["GolangChaos"] == kinds.EMBEDDED_KEYS["GolangChaos"] == "golangChaos"
    assert not info.chaos_mesh and kinds.by_name("goc") is info


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "spec.duration: is required for sql-error"),
        ({"duration": "30s", "action": "panic"}, "spec.action: unknown action 'panic' (one of sql-error)"),
        ({"duration": "soon"}, "spec.duration: invalid duration 'soon'"),
        ({"duration": "30s", "containerName": ["Bad_Name"]}, "spec.containerName[0]: must be a DNS-1123 label"),
        ({"duration": "30s", "containerName": [f"c{i}" for i in range(65)]}, "spec.containerName: at most 64"),
        ({"duration": "30s", "containerNames": ["app"]}, "containerNames"),  # unknown field, named
    ],
)
def test_bad_fields_are_refused_by_name(spec: dict[str, Any], message: str) -> None:
    found = errors(**spec)
    assert any(message in e for e in found), found
