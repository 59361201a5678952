"""Results that reach the recorder before it has consumed the decision that made their records
(two streams, two consumers) are folded at once: the scheduler stores a decision before it sends
its commands, so the recorder reads that decision from its stream. Nothing is redelivered.
"""

from __future__ import annotations

import pytest

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import subjects
from chaosbus.common.store import ObjectStore
from chaosbus.recorder.app import Recorder, last_decision
from chaosbus.recorder.metrics import RecorderMetrics
from chaosbus.recorder.sinks import StoreEvents

pytestmark = pytest.mark.integration
KIND = "NetworkChaos"


async def test_results_ahead_of_their_decision_are_folded_without_redelivery(bus: busmod.Bus) -> None:
    await bus.ensure()
    store = ObjectStore(await bus.bucket(subjects.OBJECT_STORE))
    created = await store.create(
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": KIND,
            "metadata": {"name": "ahead", "namespace": "default", "finalizers": ["chaos-mesh/records"]},
            "spec": {"action": "partition", "mode": "all", "selector": {}},
        }
    )
    uid = created["metadata"]["uid"]
    decision = m.ExperimentDecision(
        experiment_uid=uid,
        generation=1,
        kind=KIND,
        namespace="default",
        name="ahead",
        desired_phase="Run",
        records=[m.RecordRef(id="default/p0")],
        at=1.0,
    )
    await bus.publish(
        subjects.DECISIONS, subjects.decision_subject(uid), decision, msg_id=f"{uid}.1"
    )  # stored, never consumed here
    rec = Recorder(store, StoreEvents(store), RecorderMetrics(), max_events=10)
    rec.fetch_decision = last_decision(bus)
    batch = m.ResultBatch(
        command_id="c1",
        experiment_uid=uid,
        generation=1,
        kind=KIND,
        namespace="default",
        name="ahead",
        node="n1",
        results=[m.TargetResult(target_id="default/p0", op="apply", ok=True)],
    )
    assert await rec.on_result_batches([batch]) == set()
    stored = await store.get(KIND, "default", "ahead")
    assert stored is not None
    record = stored["status"]["experiment"]["containerRecords"][0]
    assert (record["id"], record["phase"], record["injectedCount"]) == ("default/p0", "Injected", 1)
    assert stored["status"]["experiment"]["desiredPhase"] == "Run"


async def test_results_no_decision_ever_named_are_dropped_once_not_retried(bus: busmod.Bus) -> None:
    await bus.ensure()
    store = ObjectStore(await bus.bucket(subjects.OBJECT_STORE))
    created = await store.create(
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": KIND,
            "metadata": {"name": "orphan", "namespace": "default"},
            "spec": {"action": "partition", "mode": "all", "selector": {}},
        }
    )
    uid = created["metadata"]["uid"]
    metrics = RecorderMetrics()
    rec = Recorder(store, StoreEvents(store), metrics, max_events=10)
    rec.fetch_decision = last_decision(bus)
    batch = m.ResultBatch(
        command_id="c1",
        experiment_uid=uid,
        generation=1,
        kind=KIND,
        namespace="default",
        name="orphan",
        node="n1",
        results=[m.TargetResult(target_id="default/p0", op="apply", ok=True)],
    )
    assert await rec.on_result_batches([batch]) == set()
    assert metrics.errors.labels("results_without_records")._value.get() == 1
    stored = await store.get(KIND, "default", "orphan")
    assert stored is not None and "status" not in stored
