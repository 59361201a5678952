"""StatusCheck `type: Prometheus` (chaosbus's extension, shaped like Litmus's promProbe): admission
refuses a bad block naming the field, and a query result is judged sample by sample."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from chaosbus.common.crd import statuscheck
from chaosbus.common.crd.errors import InvalidObject
from chaosbus.common.crd.orchestration import StatusCheckPrometheus, StatusCheckSpec
from chaosbus.common.crd.registry import decode_any

PROM = {
    "endpoint": "http://prometheus:9090",
    "query": "sum(rate(errors_total[1m]))",
    "comparator": {"criteria": "<", "value": 0.05},
}


def check(**prom: Any) -> dict[str, Any]:
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "StatusCheck",
        "metadata": {"name": "slo"},
        "spec": {"mode": "Continuous", "type": "Prometheus", "intervalSeconds": 5, "prometheus": {**PROM, **prom}},
    }


def test_a_prometheus_check_is_admitted_with_its_fields() -> None:
    obj = decode_any(check())
    assert obj["spec"]["prometheus"]["comparator"] == {"criteria": "<", "value": 0.05}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"endpoint": "prometheus:9090"}, "spec.prometheus.endpoint"),
        ({"query": " "}, "spec.prometheus.query"),
        ({"query": "x" * 5000}, "spec.prometheus.query"),
        ({"comparator": {"criteria": "=~", "value": 1}}, "spec.prometheus.comparator.criteria"),
        ({"comparator": None}, "spec.prometheus.comparator"),
        ({"comparator": {"criteria": "<", "value": "many"}}, "spec.prometheus.comparator.value"),
        ({"step": "1m"}, "spec.prometheus.step"),
    ],
)
def test_admission_refuses_a_bad_prometheus_block_by_field(change: dict[str, Any], field: str) -> None:
    doc = check(**change)
    if change.get("comparator", ...) is None:
        del doc["spec"]["prometheus"]["comparator"]
    with pytest.raises(InvalidObject, match=field.replace(".", r"\.")):
        decode_any(doc)


def test_type_prometheus_needs_its_block_and_unknown_types_are_named() -> None:
    doc = check()
    del doc["spec"]["prometheus"]
    with pytest.raises(InvalidObject, match=r"spec\.prometheus: required"):
        decode_any(doc)
    doc = check()
    doc["spec"]["type"] = "TCP"
    with pytest.raises(InvalidObject, match=r"spec\.type: 'TCP' is not supported"):
        decode_any(doc)


def prom(criteria: str, value: float) -> StatusCheckPrometheus:
    spec = msgspec.convert(
        {"type": "Prometheus", "prometheus": {**PROM, "comparator": {"criteria": criteria, "value": value}}},
        StatusCheckSpec,
    )
    statuscheck.validate(spec)
    assert spec.prometheus is not None
    return spec.prometheus


def vector(*values: str) -> dict[str, Any]:
    return {
        "resultType": "vector",
        "result": [{"metric": {"job": f"j{i}"}, "value": [1.0, v]} for i, v in enumerate(values)],
    }


@pytest.mark.parametrize(
    ("criteria", "value", "data", "ok"),
    [
        ("<", 0.05, vector("0.01"), True),
        ("<", 0.05, vector("0.01", "0.2"), False),  # every series must meet the objective
        ("<=", 0.05, vector("0.05"), True),
        (">", 0.99, vector("0.995"), True),
        (">=", 1, vector("0.5"), False),
        ("==", 1, {"resultType": "scalar", "result": [1.0, "1"]}, True),
        ("!=", 0, vector("0"), False),
        ("<", 0.05, vector(), False),  # no data: the objective cannot be seen, so it is not met
        ("<", 0.05, vector("NaN"), False),
        ("<", 0.05, {"resultType": "matrix", "result": []}, False),
    ],
)
def test_judge_compares_every_sample(criteria: str, value: float, data: dict[str, Any], ok: bool) -> None:
    passed, why = statuscheck.judge(prom(criteria, value), data)
    assert passed is ok, why
    if not ok and data.get("result"):
        assert "not" in why or "unsupported" in why
