"""Local mode's admission stores an experiment chaosbus runs with the `chaos-mesh/records`
finalizer already on it (the scheduler may act on its first event); objects it never runs get none.
"""

from __future__ import annotations

from typing import Any

import pytest

from chaosbus.common import admission
from chaosbus.common.crd.meta import RECORDS_FINALIZER

PARTITION: dict[str, Any] = {"action": "partition", "mode": "all", "selector": {"namespaces": ["default"]}}


def doc(kind: str = "NetworkChaos", spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", **meta},
        "spec": PARTITION if spec is None else spec,
    }


def test_an_executed_experiment_is_admitted_with_the_records_finalizer() -> None:
    assert admission.admit(doc())["metadata"]["finalizers"] == [RECORDS_FINALIZER]


def test_a_user_s_own_finalizers_are_kept_and_ours_is_not_doubled() -> None:
    mine = admission.admit(doc(finalizers=["example.com/keep"]))
    assert mine["metadata"]["finalizers"] == ["example.com/keep", RECORDS_FINALIZER]
    twice = admission.admit(doc(finalizers=[RECORDS_FINALIZER]))
    assert twice["metadata"]["finalizers"] == [RECORDS_FINALIZER]


def test_a_remote_cluster_s_experiment_gets_no_finalizer() -> None:
    remote = admission.admit(doc(spec={**PARTITION, "remoteCluster": "far"}))
    assert RECORDS_FINALIZER not in (remote["metadata"].get("finalizers") or [])


@pytest.mark.parametrize("kind", ["Schedule", "KernelChaos"])
def test_objects_chaosbus_does_not_run_as_experiments_get_no_finalizer(kind: str) -> None:
    spec: dict[str, Any] = (
        {
            "schedule": "@every 1m",
            "type": "NetworkChaos",
            "networkChaos": PARTITION,
            "historyLimit": 1,
            "concurrencyPolicy": "Forbid",
        }
        if kind == "Schedule"
        else {"mode": "all", "selector": {}, "failKernRequest": {"callchain": [{"funcname": "x"}], "failtype": 0}}
    )
    admitted = admission.admit(doc(kind, spec))
    assert RECORDS_FINALIZER not in (admitted["metadata"].get("finalizers") or [])
