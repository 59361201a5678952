"""Local mode writes the same experiment Events as cluster mode, on a real nats-server: the
recorder keeps them in the object store (one per object and reason, repeats counted), `chaosbus
describe` shows them, and they go with the object.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from chaosbus.cli import resources
from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import subjects
from chaosbus.common.store import ObjectStore
from chaosbus.recorder.app import Recorder
from chaosbus.recorder.metrics import RecorderMetrics
from chaosbus.recorder.sinks import StoreEvents

pytestmark = pytest.mark.integration
KIND = "NetworkChaos"


def event(obj: dict[str, Any], change: str = "MODIFIED") -> m.ObjectEvent:
    meta = obj["metadata"]
    return m.ObjectEvent(
        type=change,
        kind=KIND,
        namespace=meta["namespace"],  # type: ignore[arg-type]
        name=meta["name"],
        uid=meta["uid"],
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )


def decision(obj: dict[str, Any], phase: str, *, deleting: bool = False) -> m.ExperimentDecision:
    meta = obj["metadata"]
    return m.ExperimentDecision(
        experiment_uid=meta["uid"],
        generation=1,
        kind=KIND,
        namespace=meta["namespace"],
        name=meta["name"],
        desired_phase=phase,  # type: ignore[arg-type]
        records=[m.RecordRef(id=f"default/p{i}") for i in (0, 1)],
        deleting=deleting,
    )


def results(obj: dict[str, Any], op: str, cid: str) -> m.ResultBatch:
    meta = obj["metadata"]
    return m.ResultBatch(
        command_id=cid,
        experiment_uid=meta["uid"],
        generation=1,
        kind=KIND,
        namespace=meta["namespace"],
        name=meta["name"],
        node="n1",
        results=[
            m.TargetResult(target_id=f"default/p{i}", op=op, ok=True)  # type: ignore[arg-type]
            for i in (0, 1)
        ],
    )


async def counts(store: ObjectStore, uid: str) -> dict[str, int]:
    return {e["reason"]: e["count"] for e in await store.list("Event", "default") if e["involvedObject"]["uid"] == uid}


async def test_an_experiment_s_events_are_kept_shown_and_removed_with_it(bus: busmod.Bus) -> None:
    store = ObjectStore(await bus.bucket(subjects.OBJECT_STORE))
    rec = Recorder(store, StoreEvents(store), RecorderMetrics(), max_events=10)
    rec.replayed.set()
    created = await store.create(
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": KIND,
            "metadata": {"name": "part", "namespace": "default"},
            "spec": {"action": "partition", "mode": "all", "selector": {}},
        }
    )
    uid = created["metadata"]["uid"]
    await rec.on_object(event(created, "ADDED"))
    await rec.on_decision(decision(created, "Run"))
    await rec.on_results(results(created, "apply", "c1"))
    assert await counts(store, uid) == {"FinalizerInited": 1, "Started": 1, "Applied": 2, "Updated": 4}
    described = await resources.describe(store, KIND, "part", "default")
    assert "FinalizerInited" in described and "Successfully apply chaos for default/p1" in described

    await store.delete(KIND, "default", "part")
    deleting = await store.get(KIND, "default", "part")
    assert deleting is not None
    await rec.on_decision(decision(deleting, "Stop", deleting=True))
    await rec.on_results(results(deleting, "recover", "c2"))
    await rec.on_decision(decision(deleting, "Stop", deleting=True))
    assert await store.get(KIND, "default", "part") is None
    assert await counts(store, uid) == {
        "FinalizerInited": 1,
        "Started": 1,
        "Applied": 2,
        "Deleted": 1,
        "Recovered": 2,
        "FinalizerRemoved": 1,
        "Updated": 7,
    }
    await rec.on_object(event(deleting, "DELETED"))
    assert await counts(store, uid) == {}


PARTITION_YAML = """
apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata: {name: admitted, namespace: default}
spec: {action: partition, mode: all, selector: {namespaces: [default]}}
"""


async def test_an_experiment_admitted_with_its_finalizer_still_gets_finalizer_inited(bus: busmod.Bus) -> None:
    store = ObjectStore(await bus.bucket(subjects.OBJECT_STORE))
    rec = Recorder(store, StoreEvents(store), RecorderMetrics(), max_events=10)
    await resources.apply(store, PARTITION_YAML, None)
    stored = await store.get(KIND, "default", "admitted")
    assert stored is not None and stored["metadata"]["finalizers"] == ["chaos-mesh/records"]
    uid, version = stored["metadata"]["uid"], stored["metadata"]["resourceVersion"]
    await rec.on_object(event(stored, "ADDED"))  # replayed at start: an old object, told long ago
    assert await counts(store, uid) == {}
    rec.replayed.set()
    await rec.on_object(event(stored, "ADDED"))
    assert await counts(store, uid) == {"FinalizerInited": 1, "Updated": 1}
    after = await store.get(KIND, "default", "admitted")
    assert after is not None and after["metadata"]["resourceVersion"] == version, "nothing to write: it is there"
    await rec.on_decision(decision(after, "Run"))
    with_status = await store.get(KIND, "default", "admitted")
    assert with_status is not None
    await rec.on_object(event(with_status, "ADDED"))  # a watcher restarted: the object as it is now
    assert (await counts(store, uid))["FinalizerInited"] == 1
