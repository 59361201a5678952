"""The fake against the recorded transcripts of a real v1.36 API server: every request is replayed
and the status codes, body shapes and resourceVersion/generation behaviour must match.
Steps the fake deliberately answers differently are listed in SKIPPED with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube.replay import Replayer
from kubefake import FakeApiServer

TRANSCRIPTS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "kube-api"
SEQUENCE = [
    "01-create",
    "02-list-labelselector",
    "03-status-merge-patch",
    "04-main-merge-patch",
    "05-put-conflict",
    "06-patch-content-types",
    "07-watch-bookmarks",
    "07b-watch-initial-events-and-selectors",
    "09-finalizers",
    "10-errors-404-422-409",
    "11-events",
    "12-pods-status-fieldselector",
    "13-dry-run",
    "14-no-status-subresource",
    "15-pod-delete-graceful",
]
SKIPPED = {
    ("07b-watch-initial-events-and-selectors", 1): "the recording's etcd lacks watch progress; the fake answers as "
    "current clusters do (initial ADDED events, then a BOOKMARK annotated k8s.io/initial-events-end)",
    ("12-pods-status-fieldselector", 0): "ServiceAccount admission on a bare API server (no controller-manager)",
}
STRESS_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "stresschaos.chaos-mesh.org"},
    "spec": {
        "group": "chaos-mesh.org",
        "scope": "Namespaced",
        "names": {
            "kind": "StressChaos",
            "plural": "stresschaos",
            "singular": "stresschaos",
            "listKind": "StressChaosList",
        },
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    },
}


def _load(name: str) -> dict[str, Any]:
    if not TRANSCRIPTS.is_dir():
        pytest.skip(f"transcripts not found at {TRANSCRIPTS} (shared/ beside the repo)")
    data: dict[str, Any] = json.loads((TRANSCRIPTS / f"{name}.json").read_text())
    return data


@pytest.fixture(autouse=True)
def _transcripts_present() -> None:
    if not TRANSCRIPTS.is_dir():
        pytest.skip(f"transcripts not found at {TRANSCRIPTS} (shared/ beside the repo)")


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    server = FakeApiServer(bookmark_interval=0.3).start()
    try:
        yield server
    finally:
        server.close()


def _create(rp: Replayer, path: str, body: dict[str, Any]) -> None:
    status, _ = rp.send({"method": "POST", "path": path, "headers": {"content-type": "application/json"}, "body": body})
    assert status == 201


def replay_file(rp: Replayer, name: str) -> None:
    deferred = []
    for i, step in enumerate(_load(name)["steps"]):
        where = f"{name}[{i}] {step['request']['method']} {step['request']['path']}"
        if (name, i) in SKIPPED:
            continue
        if step["response"].get("stream"):
            rv = (step["request"].get("query") or {}).get("resourceVersion", "")
            if rv and rv != "0":
                deferred.append((where, step))
                continue
            status, events = rp.send(step["request"], watch_timeout=1)
            rp.compare_stream(where, step["response"]["body"], events, ordered=False)
            continue
        status, body = rp.send(step["request"])
        if status != step["response"]["status"]:
            rp.fail(where, f"status {status} != {step['response']['status']}: {body}")
            continue
        rp.compare(where, step["response"]["body"], body)
    for where, step in deferred:
        status, events = rp.send(step["request"], watch_timeout=1)
        if status != 200:
            rp.fail(where, f"watch status {status}")
            continue
        rp.compare_stream(where, step["response"]["body"], events)


def test_one_server_sequence_matches_the_recordings(fake: FakeApiServer) -> None:
    rp = Replayer(fake.port)
    _create(
        rp,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        yaml.safe_load((TRANSCRIPTS / "crd.yaml").read_text()) if TRANSCRIPTS.is_dir() else {},
    )
    for name in SEQUENCE:
        if name.startswith("14"):
            _create(rp, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", STRESS_CRD)
        replay_file(rp, name)
    assert rp.failures == [], "\n".join(rp.failures)


def test_410_recording_on_a_compacting_server(fake: FakeApiServer) -> None:
    rp = Replayer(fake.port)
    crd = yaml.safe_load((TRANSCRIPTS / "crd.yaml").read_text()) if TRANSCRIPTS.is_dir() else {}
    _create(rp, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    rp.rv_map[206] = fake.store.rv
    base = "/apis/chaos-mesh.org/v1alpha1/namespaces/default/networkchaos"
    _create(
        rp,
        base,
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "NetworkChaos",
            "metadata": {"name": "c-1", "labels": {"app": "x"}},
            "spec": {
                "action": "delay",
                "delay": {"latency": "100ms"},
                "duration": "30s",
                "mode": "all",
                "selector": {"labelSelectors": {"app": "web"}, "namespaces": ["default"]},
            },
        },
    )
    rp.rv_map[210] = created = fake.store.rv
    for n in range(5):
        rp.send(
            {
                "method": "PATCH",
                "path": f"{base}/c-1/status",
                "headers": {"content-type": "application/merge-patch+json"},
                "body": {"status": {"experiment": {"desiredPhase": "Run"}, "n": n}},
            }
        )
    rp.rv_map[215] = fake.store.rv
    # The watch cache still holds 210 (a watch replays from it); etcd has compacted past it.
    fake.compact(watch=True, storage=False, at=created)
    fake.compact(watch=False, storage=True)
    steps = _load("08-410-gone-expired")["steps"]
    for i, step in enumerate(steps):
        where = f"08[{i}]"
        if i == len(steps) - 2:  # the last two steps ran with the watch cache disabled
            fake.compact(watch=True, storage=False)
        if step["response"].get("stream"):
            status, events = rp.send(step["request"], watch_timeout=1)
            rp.compare_stream(where, step["response"]["body"], events)
            continue
        status, body = rp.send(step["request"])
        if status != step["response"]["status"]:
            rp.fail(where, f"status {status} != {step['response']['status']}")
            continue
        rp.compare(where, step["response"]["body"], body)
    assert rp.failures == [], "\n".join(rp.failures)
