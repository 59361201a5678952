"""Semantics of the API fake beyond the recorded transcripts, the ones the adapters rely on:
restart (stop/start on the same port, state kept), 410 after compaction, label-selector watch
transitions, paging, initial-events bookmark, pod-spec immutability except images, JSON patch ops,
strategic merge of container statuses by name. Runs only against the fake (it is about the fake).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube.client import KubeClient, KubeError
from kube.conftest import KubeEnv
from kubefake import FakeApiServer


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[FakeApiServer, KubeClient]]:
    server = FakeApiServer(bookmark_interval=0.2).start()
    try:
        yield server, KubeClient(server.write_kubeconfig(tmp_path / "kc"))
    finally:
        server.close()


def _watch(port: int, path: str, **query: str) -> list[dict[str, Any]]:
    qs = "&".join(f"{k}={v}" for k, v in {"watch": "true", **query}.items())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", f"{path}?{qs}")
    body = conn.getresponse().read().decode()
    conn.close()
    return [json.loads(line) for line in body.splitlines() if line]


def _pod(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": "n1", "containers": [{"name": "main", "image": "a:1"}, {"name": "side", "image": "b:1"}]},
    }


def test_restart_keeps_state_and_resource_versions(fake: tuple[FakeApiServer, KubeClient]) -> None:
    server, client = fake
    client.create("/api/v1/namespaces/default/pods", _pod("p1"))
    before = client.get("/api/v1/namespaces/default/pods/p1")
    port = server.port
    server.stop()
    with pytest.raises(OSError):
        client.get("/api/v1/namespaces/default/pods/p1")
    server.start()
    assert server.port == port
    assert client.get("/api/v1/namespaces/default/pods/p1") == before


def test_restart_ends_open_watches(fake: tuple[FakeApiServer, KubeClient]) -> None:
    server, _ = fake
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(_watch(server.port, "/api/v1/pods", timeoutSeconds="30")))
    t.start()
    time.sleep(0.3)
    server.stop()
    t.join(5)
    assert not t.is_alive()
    server.start()


def test_compaction_gives_410_in_the_watch_stream(fake: tuple[FakeApiServer, KubeClient]) -> None:
    server, client = fake
    old = client.request("GET", "/api/v1/pods")["metadata"]["resourceVersion"]
    client.create("/api/v1/namespaces/default/pods", _pod("p1"))
    server.compact()
    events = _watch(server.port, "/api/v1/pods", resourceVersion=old, timeoutSeconds="1")
    assert [e["type"] for e in events] == ["ERROR"]
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


def test_history_limit_compacts_on_its_own(tmp_path: Path) -> None:
    server = FakeApiServer().start()
    try:
        server.store.max_history = 3
        client = KubeClient(server.write_kubeconfig(tmp_path / "kc"))
        start = client.request("GET", "/api/v1/pods")["metadata"]["resourceVersion"]
        for i in range(5):
            client.create("/api/v1/namespaces/default/pods", _pod(f"p{i}"))
        events = _watch(server.port, "/api/v1/pods", resourceVersion=start, timeoutSeconds="1")
        assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410
    finally:
        server.close()


def test_initial_events_end_with_an_annotated_bookmark(fake: tuple[FakeApiServer, KubeClient]) -> None:
    server, client = fake
    client.create("/api/v1/namespaces/default/pods", _pod("p1"))
    events = _watch(
        server.port,
        "/api/v1/pods",
        sendInitialEvents="true",
        allowWatchBookmarks="true",
        resourceVersionMatch="NotOlderThan",
        timeoutSeconds="1",
    )
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_paging_with_continue(fake: tuple[FakeApiServer, KubeClient]) -> None:
    _, client = fake
    for i in range(5):
        client.create("/api/v1/namespaces/default/pods", _pod(f"p{i}"))
    names, token = [], ""
    while True:
        page = client.request("GET", "/api/v1/pods", query={"limit": "2", **({"continue": token} if token else {})})
        names += [p["metadata"]["name"] for p in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert names == ["p0", "p1", "p2", "p3", "p4"]


def test_pod_spec_is_immutable_except_images(fake: tuple[FakeApiServer, KubeClient]) -> None:
    _, client = fake
    client.create("/api/v1/namespaces/default/pods", _pod("p1"))
    path = "/api/v1/namespaces/default/pods/p1"
    patched = client.request(
        "PATCH",
        path,
        [{"op": "replace", "path": "/spec/containers/1/image", "value": "pause"}],
        content_type="application/json-patch+json",
    )
    assert [c["image"] for c in patched["spec"]["containers"]] == ["a:1", "pause"]
    assert patched["metadata"]["generation"] == 2
    with pytest.raises(KubeError) as err:
        client.merge_patch(path, {"spec": {"nodeName": "elsewhere"}})
    assert err.value.status == 422


def test_strategic_merge_of_container_statuses_by_name(fake: tuple[FakeApiServer, KubeClient]) -> None:
    _, client = fake
    client.create("/api/v1/namespaces/default/pods", _pod("p1"))
    path = "/api/v1/namespaces/default/pods/p1/status"
    statuses = [{"name": "main", "containerID": "process://10"}, {"name": "side", "containerID": "process://11"}]
    client.merge_patch(path, {"status": {"containerStatuses": statuses}})
    out = client.request(
        "PATCH",
        path,
        {"status": {"containerStatuses": [{"name": "side", "ready": True}]}},
        content_type="application/strategic-merge-patch+json",
    )
    assert [(c["name"], c.get("ready")) for c in out["status"]["containerStatuses"]] == [("main", None), ("side", True)]


def test_label_selector_watch_turns_relabels_into_added_and_deleted(fake: tuple[FakeApiServer, KubeClient]) -> None:
    server, client = fake
    client.create("/api/v1/namespaces/default/pods", _pod("p1", app="y"))
    rv = client.request("GET", "/api/v1/pods")["metadata"]["resourceVersion"]
    path = "/api/v1/namespaces/default/pods/p1"
    client.merge_patch(path, {"metadata": {"labels": {"app": "x"}}})
    client.merge_patch(path, {"metadata": {"labels": {"app": "y"}}})
    events = _watch(server.port, "/api/v1/pods", resourceVersion=rv, labelSelector="app=x", timeoutSeconds="1")
    assert [(e["type"], e["object"]["metadata"]["labels"]["app"]) for e in events] == [("ADDED", "x"), ("DELETED", "x")]


def test_events_v1_are_listed_as_core_events(fake: tuple[FakeApiServer, KubeClient]) -> None:
    _, client = fake
    client.create(
        "/apis/events.k8s.io/v1/namespaces/default/events",
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "e1"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "type": "Normal",
            "reason": "Started",
            "action": "Inject",
            "reportingController": "chaos-mesh.org/chaosbus",
            "reportingInstance": "r-0",
            "note": "hi",
            "regarding": {"kind": "NetworkChaos", "name": "x", "namespace": "default"},
        },
    )
    items = client.request(
        "GET",
        "/api/v1/namespaces/default/events",
        query={"fieldSelector": "involvedObject.kind=NetworkChaos,involvedObject.name=x"},
    )["items"]
    assert [(e["reason"], e["message"], e["reportingComponent"]) for e in items] == [
        ("Started", "hi", "chaos-mesh.org/chaosbus")
    ]


def test_the_garbage_collector_deletes_what_no_existing_owner_owns(kube: KubeEnv) -> None:
    """Background propagation as kube-controller-manager's garbage collector does it: a child whose
    owner (by uid) does not exist is deleted, and deleting an owner deletes its children."""
    base = f"/api/v1/namespaces/{kube.namespace}/configmaps"

    def configmap(name: str, owner: dict[str, str] | None = None) -> dict[str, object]:
        meta: dict[str, object] = {"name": name}
        if owner:
            meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", **owner}]
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}

    parent = kube.client.create(base, configmap("parent"))
    kube.client.create(base, configmap("child", {"name": "parent", "uid": parent["metadata"]["uid"]}))
    kube.client.create(base, configmap("orphan", {"name": "parent", "uid": "not-the-parents-uid"}))
    kube.client.wait_for(lambda: kube.client.get(f"{base}/orphan") is None, timeout=30, what="orphan collected")
    assert kube.client.get(f"{base}/child") is not None
    kube.client.delete(f"{base}/parent")
    kube.client.wait_for(lambda: kube.client.get(f"{base}/child") is None, timeout=30, what="child collected")
