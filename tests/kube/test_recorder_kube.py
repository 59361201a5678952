"""The recorder's Kubernetes edge against the API (fake, or a real server): status through the
status subresource with merge patch (generation untouched), 409 retried, the records finalizer
added and removed, Events with Chaos Mesh's reasons, and the fallback for CRDs without /status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from kube.conftest import KubeEnv

from chaosbus.common import kubeclient
from chaosbus.common import messages as m
from chaosbus.recorder import kube as rkube
from chaosbus.recorder.app import Recorder
from chaosbus.recorder.metrics import RecorderMetrics

pytestmark = pytest.mark.integration
KIND = "NetworkChaos"


def partition(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {"action": "partition", "mode": "all", "selector": {"labelSelectors": {"app": "web"}}},
    }


@pytest.fixture
async def recorder(kube: KubeEnv) -> AsyncIterator[Recorder]:
    api = await kubeclient.api_client(str(kube.kubeconfig))
    async with api:
        rec = Recorder(rkube.KubeStore(api), rkube.KubeEvents(api, "test-0"), RecorderMetrics(), max_events=10)
        rec.replayed.set()
        yield rec


def decision(
    obj: dict[str, Any], phase: str, *, deleting: bool = False, ids: tuple[str, ...] = ("p0", "p1")
) -> m.ExperimentDecision:
    meta = obj["metadata"]
    return m.ExperimentDecision(
        experiment_uid=meta["uid"],
        generation=1,
        kind=KIND,
        namespace=meta["namespace"],
        name=meta["name"],
        desired_phase=phase,  # type: ignore[arg-type]
        records=[m.RecordRef(id=f"{meta['namespace']}/{i}") for i in ids],
        deleting=deleting,
    )


def results(obj: dict[str, Any], op: str, cid: str, ok: bool = True) -> m.ResultBatch:
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
            m.TargetResult(
                target_id=f"{meta['namespace']}/{i}",
                op=op,  # type: ignore[arg-type]
                ok=ok,
                message="" if ok else "boom",
            )
            for i in ("p0", "p1")
        ],
    )


def event_reasons(kube: KubeEnv, name: str) -> list[str]:
    items = kube.client.request(
        "GET",
        f"/api/v1/namespaces/{kube.namespace}/events",
        query={"fieldSelector": f"involvedObject.kind={KIND},involvedObject.name={name}"},
    )["items"]
    return [e["reason"] for e in sorted(items, key=lambda e: e["metadata"]["name"])]


def object_event(obj: dict[str, Any], kind_of_change: str = "MODIFIED") -> m.ObjectEvent:
    import msgspec

    meta = obj["metadata"]
    return m.ObjectEvent(
        type=kind_of_change,
        kind=KIND,
        namespace=meta["namespace"],  # type: ignore[arg-type]
        name=meta["name"],
        uid=meta["uid"],
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )


async def test_status_finalizer_and_events_through_the_api(kube: KubeEnv, recorder: Recorder) -> None:
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/networkchaos"
    created = kube.client.create(path, partition("part"))
    await recorder.on_object(object_event(created, "ADDED"))
    obj = kube.client.get(f"{path}/part")
    assert obj is not None and obj["metadata"]["finalizers"] == ["chaos-mesh/records"]

    await recorder.on_decision(decision(obj, "Run"))
    await recorder.on_results(results(obj, "apply", "c1"))
    obj = kube.client.get(f"{path}/part")
    assert obj is not None
    assert obj["metadata"]["generation"] == 1  # status writes never bump generation
    status = obj["status"]
    assert status["experiment"]["desiredPhase"] == "Run"
    assert [(r["id"], r["phase"], r["injectedCount"]) for r in status["experiment"]["containerRecords"]] == [
        (f"{kube.namespace}/p0", "Injected", 1),
        (f"{kube.namespace}/p1", "Injected", 1),
    ]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Selected": "True",
        "AllInjected": "True",
        "AllRecovered": "False",
        "Paused": "False",
    }

    deleting = kube.client.delete(f"{path}/part")
    assert deleting["metadata"]["deletionTimestamp"]
    await recorder.on_decision(decision(deleting, "Stop", deleting=True))
    assert kube.client.get(f"{path}/part") is not None  # targets not recovered yet: finalizer stays
    await recorder.on_results(results(deleting, "recover", "c2"))
    await recorder.on_decision(decision(deleting, "Stop", deleting=True))
    assert kube.client.get(f"{path}/part") is None  # recovered, finalizer removed, object gone
    assert event_reasons(kube, "part") == [
        "FinalizerInited",
        "Updated",  # finalizer
        "Started",
        "Updated",
        "Updated",  # desiredPhase Run, the records
        "Applied",
        "Applied",
        "Updated",
        "Deleted",
        "Updated",  # desiredPhase Stop
        "Recovered",
        "Recovered",
        "Updated",
        "FinalizerRemoved",
        "Updated",
    ]


async def test_failures_become_warning_events(kube: KubeEnv, recorder: Recorder) -> None:
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/networkchaos"
    created = kube.client.create(path, partition("bad"))
    await recorder.on_decision(decision(created, "Run"))
    await recorder.on_results(results(created, "apply", "c1", ok=False))
    items = kube.client.request(
        "GET",
        f"/api/v1/namespaces/{kube.namespace}/events",
        query={"fieldSelector": "involvedObject.name=bad,reason=Failed"},
    )["items"]
    assert {(e["type"], e["message"]) for e in items} == {
        ("Warning", f"Failed to apply chaos for {kube.namespace}/{p}: boom") for p in ("p0", "p1")
    }


async def test_a_conflicting_write_is_retried_on_the_fresh_object(kube: KubeEnv, recorder: Recorder) -> None:
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/networkchaos"
    created = kube.client.create(path, partition("race"))
    store = recorder.store
    assert isinstance(store, rkube.KubeStore)
    calls = []

    def racing(obj: dict[str, Any]) -> dict[str, Any]:
        calls.append(obj["metadata"]["resourceVersion"])
        if len(calls) == 1:  # someone else writes between our read and our write
            kube.client.merge_patch(f"{path}/race/status", {"status": {"experiment": {"desiredPhase": "Stop"}}})
        status = dict(obj.get("status") or {})
        status["conditions"] = [{"type": "Selected", "status": "False"}]
        return {**obj, "status": status}

    await store.mutate(KIND, kube.namespace, "race", racing)
    assert store.conflicts == 1 and len(calls) == 2 and calls[0] != calls[1]
    final = kube.client.get(f"{path}/race")
    assert final is not None and final["status"]["experiment"]["desiredPhase"] == "Stop"
    assert final["status"]["conditions"] == [{"type": "Selected", "status": "False"}]
    assert final["metadata"]["generation"] == created["metadata"]["generation"]


async def test_status_through_the_main_resource_without_the_subresource(kube: KubeEnv, recorder: Recorder) -> None:
    fake = kube.need_fake("re-registering a CRD without the status subresource")
    res = fake.store.resources[("chaos-mesh.org", "v1alpha1", "networkchaos")]
    from dataclasses import replace

    fake.call(lambda: fake.store.register(replace(res, status_subresource=False)))
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/networkchaos"
    created = kube.client.create(path, partition("plain"))
    await recorder.on_decision(decision(created, "Run"))
    obj = kube.client.get(f"{path}/plain")
    assert obj is not None and obj["status"]["experiment"]["desiredPhase"] == "Run"
    assert obj["metadata"]["generation"] == 2  # as with Chaos Mesh's CRDs: status bumps generation
    assert isinstance(recorder.store, rkube.KubeStore) and recorder.store.no_status_subresource == {"networkchaos"}


def create_examples(kube: KubeEnv) -> None:
    from pathlib import Path

    import yaml

    from chaosbus.common.crd import ALL_KINDS, plural_of

    examples = Path(__file__).resolve().parents[1] / "data" / "chaos-mesh-examples"
    for path in sorted(examples.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or not ALL_KINDS[doc["kind"]].namespaced:
                continue
            doc["metadata"].pop("namespace", None)
            kube.client.create(
                f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/{plural_of(doc['kind'])}", doc
            )


async def test_every_example_is_accepted_and_unexecuted_kinds_are_marked(kube: KubeEnv, recorder: Recorder) -> None:
    from chaosbus.common.crd import NOT_EXECUTED

    create_examples(kube)
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/jvmchaos/jvm-return-example"
    accepted = kube.client.get(path)
    assert accepted is not None and accepted["spec"]["value"] == "9999"  # stored unchanged
    assert "JVMChaos" in NOT_EXECUTED
    import msgspec

    await recorder.on_object(
        m.ObjectEvent(
            type="ADDED",
            kind="JVMChaos",
            namespace=kube.namespace,
            name="jvm-return-example",
            uid=accepted["metadata"]["uid"],
            object=msgspec.Raw(msgspec.json.encode(accepted)),
        )
    )
    marked = kube.client.get(path)
    assert marked is not None and "finalizers" not in marked["metadata"]
    [condition] = marked["status"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == ("Supported", "False", "NotSupported")
    items = kube.client.request(
        "GET",
        f"/api/v1/namespaces/{kube.namespace}/events",
        query={"fieldSelector": "involvedObject.name=jvm-return-example"},
    )["items"]
    assert [(e["type"], e["reason"]) for e in items] == [("Warning", "NotSupported")]


def write(op: str, name: str, obj: Any = None, **kw: Any) -> m.ObjectWrite:
    return m.ObjectWrite(
        write_id=f"{op}-{name}",
        op=op,
        kind=KIND,
        namespace=kw.pop("namespace"),  # type: ignore[arg-type]
        name=name,
        object=msgspec.Raw(msgspec.json.encode(obj)),
        **kw,
    )


async def test_object_writes_create_patch_annotate_and_delete_through_the_api(
    kube: KubeEnv, recorder: Recorder
) -> None:
    ns, path = kube.namespace, f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/networkchaos"
    # A real owner: the API server's garbage collector deletes a child whose owner does not exist.
    schedule = kube.client.create(
        f"/apis/chaos-mesh.org/v1alpha1/namespaces/{ns}/schedules",
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "Schedule",
            "metadata": {"name": "s"},
            "spec": {
                "schedule": "@every 1h",
                "type": KIND,
                "concurrencyPolicy": "Forbid",
                "networkChaos": partition("x")["spec"],
            },
        },
    )
    sched_uid = schedule["metadata"]["uid"]
    owner = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "Schedule",
        "name": "s",
        "uid": sched_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    wanted = partition("s-1") | {"metadata": {"name": "s-1", "labels": {"managed-by": "s"}, "ownerReferences": [owner]}}
    await recorder.on_write(write("create", "s-1", wanted, namespace=ns, reason="Spawned"))
    created = kube.client.get(f"{path}/s-1")
    assert created is not None and created["metadata"]["ownerReferences"] == [owner]
    await recorder.on_write(write("create", "s-1", wanted, namespace=ns, reason="Spawned"))  # 409: already there
    spawned = kube.client.request(
        "GET",
        f"/api/v1/namespaces/{ns}/events",
        query={"fieldSelector": "involvedObject.kind=Schedule,involvedObject.name=s"},
    )["items"]
    assert [(e["reason"], e["message"], e["involvedObject"]["uid"]) for e in spawned] == [
        ("Spawned", "Create new object: s-1", sched_uid)
    ]  # once: the redelivered create spawned nothing
    uid = created["metadata"]["uid"]
    assert kube.client.get(f"{path}/s-1")["metadata"]["uid"] == uid  # type: ignore[index]
    body = {"type": "Warning", "message": "Forbid spawning new job because: s-1 is still running"}
    forbid = m.ObjectWrite(
        write_id="ev-1",
        op="event",
        kind="Schedule",
        namespace=ns,
        name="s",
        uid=sched_uid,
        reason="Forbid",
        object=msgspec.Raw(msgspec.json.encode(body)),
    )
    await recorder.on_write(forbid)  # an Event the scheduler decided: a core/v1 Event on the Schedule
    on_schedule = kube.client.request(
        "GET",
        f"/api/v1/namespaces/{ns}/events",
        query={"fieldSelector": "involvedObject.kind=Schedule,involvedObject.name=s"},
    )["items"]
    assert [(e["type"], e["reason"], e["involvedObject"]["uid"]) for e in on_schedule] == [
        ("Normal", "Spawned", sched_uid),
        ("Warning", "Forbid", sched_uid),
    ]

    await recorder.on_write(
        write("annotate", "s-1", uid=uid, namespace=ns, annotations={"experiment.chaos-mesh.org/pause": "true"})
    )
    await recorder.on_write(write("status", "s-1", {"experiment": {"desiredPhase": "Stop"}}, uid=uid, namespace=ns))
    got = kube.client.get(f"{path}/s-1")
    assert got is not None and got["metadata"]["annotations"] == {"experiment.chaos-mesh.org/pause": "true"}
    assert got["status"]["experiment"]["desiredPhase"] == "Stop"

    bad = partition("Not_A_Name") | {"metadata": {"name": "Not_A_Name"}}
    await recorder.on_write(write("create", "Not_A_Name", bad, namespace=ns))  # 422: logged and dropped, not retried
    assert recorder.metrics.errors.labels("bad_write")._value.get() == 1

    await recorder.on_write(write("delete", "s-1", uid="a-predecessor", namespace=ns))  # uid precondition: 409
    assert kube.client.get(f"{path}/s-1") is not None
    await recorder.on_write(write("delete", "s-1", uid=uid, namespace=ns))
    assert kube.client.get(f"{path}/s-1") is None
