"""Objects chaosbus stores but never runs, against the API (fake, or a real server), with the
scheduler's core and the recorder's Kubernetes edge between them: an experiment the scheduler
cannot decode (the CRD schema cannot express every rule: here a container-kill without
containerNames) is Failed with the reason and, never injected, is released at once when deleted;
an experiment for a remote cluster is marked not supported, gets no finalizer and selects nothing
here.
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
from chaosbus.scheduler.core import SchedulerCore

pytestmark = pytest.mark.integration
NOW = 1_800_000_000.0


@pytest.fixture
async def recorder(kube: KubeEnv) -> AsyncIterator[Recorder]:
    api = await kubeclient.api_client(str(kube.kubeconfig))
    async with api:
        rec = Recorder(rkube.KubeStore(api), rkube.KubeEvents(api, "test-0"), RecorderMetrics(), max_events=10)
        rec.replayed.set()
        yield rec


def event(obj: dict[str, Any], change: str = "MODIFIED") -> m.ObjectEvent:
    meta = obj["metadata"]
    return m.ObjectEvent(
        type=change,
        kind=obj["kind"],
        namespace=meta["namespace"],  # type: ignore[arg-type]
        name=meta["name"],
        uid=meta["uid"],
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )


async def scheduler_step(core: SchedulerCore, recorder: Recorder, obj: dict[str, Any]) -> int:
    """The scheduler sees the object; the recorder carries out its decisions. How many there were."""
    out = core.on_object(event(obj), NOW)
    assert out.commands == []
    for d in out.decisions:
        await recorder.on_decision(d)
    return len(out.decisions)


async def test_an_object_the_scheduler_cannot_decode_fails_and_deletes(kube: KubeEnv, recorder: Recorder) -> None:
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/podchaos"
    created = kube.client.create(
        path,
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "PodChaos",
            "metadata": {"name": "bad"},
            "spec": {"action": "container-kill", "mode": "one", "selector": {}},
        },
    )
    core = SchedulerCore()
    await recorder.on_object(event(created, "ADDED"))
    stored = kube.client.get(f"{path}/bad")
    assert stored is not None and stored["metadata"]["finalizers"] == ["chaos-mesh/records"]

    assert await scheduler_step(core, recorder, stored) == 1
    stored = kube.client.get(f"{path}/bad")
    assert stored is not None and stored["status"]["phase"] == "Failed"
    selected = next(c for c in stored["status"]["conditions"] if c["type"] == "Selected")
    assert selected["status"] == "False" and "spec.containerNames" in selected["message"]
    assert await scheduler_step(core, recorder, stored) == 0  # the echo of that write says nothing new

    deleting = kube.client.delete(f"{path}/bad")
    assert deleting["metadata"]["deletionTimestamp"]
    assert await scheduler_step(core, recorder, deleting) == 1
    assert kube.client.get(f"{path}/bad") is None  # never injected: the finalizer went at once


async def test_a_remote_cluster_experiment_is_not_supported_and_never_runs_here(
    kube: KubeEnv, recorder: Recorder
) -> None:
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/networkchaos"
    created = kube.client.create(
        path,
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "NetworkChaos",
            "metadata": {"name": "far"},
            "spec": {"action": "partition", "mode": "all", "selector": {}, "remoteCluster": "cluster-b"},
        },
    )
    core = SchedulerCore()
    core.on_target(
        "pod.default.web", m.TargetPod(uid="u1", namespace=kube.namespace, name="web", node="n1", pod_ip="10.0.0.1")
    )
    await recorder.on_object(event(created, "ADDED"))
    stored = kube.client.get(f"{path}/far")
    assert stored is not None and not stored["metadata"].get("finalizers")
    supported = next(c for c in stored["status"]["conditions"] if c["type"] == "Supported")
    assert (supported["status"], supported["reason"]) == ("False", "NotSupported")
    assert "remoteCluster is 'cluster-b'" in supported["message"]

    assert await scheduler_step(core, recorder, stored) == 0
    assert core.experiments == {}
    kube.client.delete(f"{path}/far")
    assert kube.client.get(f"{path}/far") is None
