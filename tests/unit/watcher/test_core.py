"""Watcher core: Pods, Namespaces and Nodes become target projections; chaos objects become
ADDED / MODIFIED / DELETED events with idempotency ids; anything else is ignored.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from chaosbus.common import messages as m
from chaosbus.common import subjects
from chaosbus.watcher.core import WatcherCore, project_namespace, project_node, project_pod, status_only

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web-0",
        "namespace": "prod",
        "uid": "pu1",
        "labels": {"app": "web"},
        "annotations": {"owner": "a"},
    },
    "spec": {
        "nodeName": "n1",
        "hostNetwork": True,
        "restartPolicy": "Never",
        "schedulerName": "custom",
        "serviceAccountName": "sa",
        "containers": [{"name": "app"}, {"name": "proxy"}, {"name": "new"}],
    },
    "status": {
        "phase": "Running",
        "podIP": "10.0.0.5",
        "nominatedNodeName": "n2",
        "containerStatuses": [
            {"name": "proxy", "containerID": "containerd://bbb", "ready": False, "restartCount": 3},
            {"name": "app", "containerID": "process://aaa", "ready": True, "restartCount": 0},
        ],
    },
}

CHAOS: dict[str, Any] = {
    "apiVersion": "chaos-mesh.org/v1alpha1",
    "kind": "PodChaos",
    "metadata": {"name": "kill.me", "namespace": "prod", "uid": "cu1", "generation": 2},
    "spec": {"action": "pod-kill", "mode": "one", "selector": {}},
}


def with_meta(obj: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], **meta}}


# --- projections ---------------------------------------------------------------------------------


def test_pod_projection_fields() -> None:
    p = project_pod(POD)
    assert (
        p.uid,
        p.namespace,
        p.name,
        p.labels,
        p.annotations,
        p.node,
        p.pod_ip,
        p.phase,
        p.host_network,
        p.restart_policy,
        p.scheduler_name,
        p.service_account,
        p.nominated_node,
        p.deleting,
    ) == (
        "pu1",
        "prod",
        "web-0",
        {"app": "web"},
        {"owner": "a"},
        "n1",
        "10.0.0.5",
        "Running",
        True,
        "Never",
        "custom",
        "sa",
        "n2",
        False,
    )


def test_pod_containers_follow_spec_order_with_status_ids() -> None:
    assert project_pod(POD).containers == [
        m.ContainerRef(name="app", container_id="process://aaa", ready=True, restart_count=0),
        m.ContainerRef(name="proxy", container_id="containerd://bbb", ready=False, restart_count=3),
        m.ContainerRef(name="new"),
    ]


def test_pod_defaults_for_a_bare_pod() -> None:
    p = project_pod({"kind": "Pod", "metadata": {"name": "p"}})
    assert (
        p.namespace,
        p.phase,
        p.node,
        p.pod_ip,
        p.restart_policy,
        p.scheduler_name,
        p.service_account,
        p.containers,
        p.deleting,
    ) == ("default", "Pending", "", "", "Always", "default-scheduler", "default", [], False)


@pytest.mark.parametrize(("deletion", "deleting"), [("2026-01-01T00:00:00Z", True), (None, False), ("", False)])
def test_pod_deletion_timestamp_means_deleting(deletion: str | None, deleting: bool) -> None:
    assert project_pod(with_meta(POD, deletionTimestamp=deletion)).deleting is deleting


def test_namespace_projection() -> None:
    ns = {
        "kind": "Namespace",
        "metadata": {"name": "prod", "labels": {"env": "p"}, "annotations": {"chaos-mesh.org/inject": "enabled"}},
    }
    assert project_namespace(ns) == m.TargetNamespace(
        name="prod", labels={"env": "p"}, annotations={"chaos-mesh.org/inject": "enabled"}
    )


def test_node_projection() -> None:
    node = {"kind": "Node", "metadata": {"name": "n1", "labels": {"zone": "a"}, "annotations": {"x": "y"}}}
    assert project_node(node) == m.TargetNode(name="n1", labels={"zone": "a"})


@pytest.mark.parametrize(
    ("obj", "key", "value"),
    [
        (POD, "pod.prod.web-0", project_pod(POD)),
        ({"kind": "Namespace", "metadata": {"name": "prod"}}, "namespace.prod", m.TargetNamespace(name="prod")),
        (
            {"kind": "Node", "metadata": {"name": "n1.example.com"}},
            "node.n1.example.com",
            m.TargetNode(name="n1.example.com"),
        ),
    ],
)
def test_put_projects_targets(obj: dict[str, Any], key: str, value: m.Message) -> None:
    out = WatcherCore().on_put("objkey", obj, 5)
    assert (out.target_puts, out.target_deletes, out.events) == ([(key, value)], [], [])


@pytest.mark.parametrize(
    ("obj", "key"),
    [
        (POD, "pod.prod.web-0"),
        ({"kind": "Namespace", "metadata": {"name": "prod"}}, "namespace.prod"),
        ({"kind": "Node", "metadata": {"name": "n1"}}, "node.n1"),
    ],
)
def test_delete_removes_the_projection(obj: dict[str, Any], key: str) -> None:
    core = WatcherCore()
    core.on_put("objkey", obj, 5)
    out = core.on_delete("objkey", 6)
    assert (out.target_deletes, out.target_puts, out.events) == ([key], [], [])


# --- chaos object events -------------------------------------------------------------------------


def test_first_put_is_added_then_modified() -> None:
    core = WatcherCore()
    first = core.on_put("PodChaos.prod.kill.me", CHAOS, 7)
    second = core.on_put("PodChaos.prod.kill.me", with_meta(CHAOS, labels={"a": "b"}), 8)
    assert [e.type for _, e, _ in first.events + second.events] == ["ADDED", "MODIFIED"]
    assert first.target_puts == [] and second.target_puts == []


def test_event_carries_identity_version_and_the_whole_object() -> None:
    [(subject, ev, msg_id)] = WatcherCore().on_put("PodChaos.prod.kill.me", CHAOS, 7).events
    assert (ev.kind, ev.namespace, ev.name, ev.uid, ev.generation, ev.resource_version) == (
        "PodChaos",
        "prod",
        "kill.me",
        "cu1",
        2,
        "7",
    )
    assert msgspec.json.decode(ev.object) == CHAOS


def test_event_subject_makes_dotted_names_one_token() -> None:
    [(subject, _, _)] = WatcherCore().on_put("PodChaos.prod.kill.me", CHAOS, 7).events
    assert subject == "chaos.obj.PodChaos.prod.kill_me"


@pytest.mark.parametrize(("revision", "expected"), [(7, "cu1.7.ADDED"), (123, "cu1.123.ADDED")])
def test_event_msg_id_is_uid_revision_and_type(revision: int, expected: str) -> None:
    [(_, _, msg_id)] = WatcherCore().on_put("k", CHAOS, revision).events
    assert msg_id == expected


def test_replaying_the_same_revision_gives_the_same_msg_id() -> None:
    """A restarted watcher re-emits its snapshot; JetStream de-duplicates it by this id."""
    a = WatcherCore().on_put("k", CHAOS, 7).events[0][2]
    b = WatcherCore().on_put("k", CHAOS, 7).events[0][2]
    assert a == b


def test_delete_emits_deleted_built_from_the_last_seen_object() -> None:
    core = WatcherCore()
    core.on_put("k", CHAOS, 7)
    last = with_meta(CHAOS, deletionTimestamp="2026-01-01T00:00:00Z", finalizers=[])
    core.on_put("k", last, 8)
    [tombstone, (subject, ev, msg_id)] = core.on_delete("k", 9).events
    assert (ev.type, ev.uid, ev.resource_version, msg_id) == ("DELETED", "cu1", "9", "cu1.9.DELETED")
    assert msgspec.json.decode(ev.object) == last and not ev.status_only
    assert tombstone[0] == subjects.status_subject(ev.kind, ev.namespace, ev.name)
    assert tombstone[1].type == "DELETED" and tombstone[1].status_only
    assert msgspec.json.decode(tombstone[1].object)["metadata"] == {
        "name": last["metadata"]["name"],
        "namespace": last["metadata"]["namespace"],
        "uid": "cu1",
    }


def test_delete_forgets_the_object() -> None:
    core = WatcherCore()
    core.on_put("k", CHAOS, 7)
    core.on_delete("k", 8)
    assert core.seen == {}
    assert [e.type for _, e, _ in core.on_put("k", CHAOS, 9).events] == ["ADDED"]


def test_delete_of_an_unseen_key_does_nothing() -> None:
    out = WatcherCore().on_delete("PodChaos.prod.ghost", 3)
    assert (out.events, out.target_puts, out.target_deletes) == ([], [], [])


@pytest.mark.parametrize("kind", ["JVMChaos", "Schedule"])
def test_accepted_but_unexecuted_kinds_are_published_for_the_recorder(kind: str) -> None:
    core = WatcherCore()
    obj = {"kind": kind, "metadata": {"name": "a", "namespace": "b", "uid": "u"}}
    assert [e.type for _, e, _ in core.on_put("k", obj, 1).events] == ["ADDED"]
    assert [(e.type, e.status_only) for _, e, _ in core.on_delete("k", 2).events] == [
        ("DELETED", True),
        ("DELETED", False),
    ]


@pytest.mark.parametrize("kind", ["ConfigMap", "FooChaos", ""])
def test_unknown_kinds_are_ignored(kind: str) -> None:
    core = WatcherCore()
    obj = {"kind": kind, "metadata": {"name": "a", "namespace": "b", "uid": "u"}}
    put = core.on_put("k", obj, 1)
    gone = core.on_delete("k", 2)
    assert (put.events, put.target_puts, gone.events, gone.target_deletes) == ([], [], [], [])


def test_a_change_of_status_alone_goes_to_the_status_subject() -> None:
    core = WatcherCore()
    core.on_put("k", CHAOS, 7)
    [(subject, ev, msg_id)] = core.on_put("k", {**CHAOS, "status": {"experiment": {"desiredPhase": "Run"}}}, 8).events
    assert (
        subject
        == subjects.status_subject(ev.kind, ev.namespace, ev.name)
        != subjects.object_subject(ev.kind, ev.namespace, ev.name)
    )
    assert (ev.type, ev.status_only, msg_id) == ("MODIFIED", True, "cu1.8.MODIFIED.status")


@pytest.mark.parametrize(
    "change",
    [
        {"metadata": {**CHAOS["metadata"], "finalizers": ["chaos-mesh/records"]}},
        {"metadata": {**CHAOS["metadata"], "annotations": {"experiment.chaos-mesh.org/pause": "true"}}},
        {"spec": {**CHAOS["spec"], "mode": "all"}},
    ],
    ids=["finalizer", "annotation", "spec"],
)
def test_a_change_beyond_status_goes_to_the_object_subject_with_its_status(change: dict[str, Any]) -> None:
    core = WatcherCore()
    core.on_put("k", CHAOS, 7)
    [(subject, ev, _)] = core.on_put("k", {**CHAOS, **change, "status": {"x": 1}}, 8).events
    assert subject == subjects.object_subject(ev.kind, ev.namespace, ev.name) and not ev.status_only


def test_the_api_server_s_own_fields_do_not_make_a_status_write_more() -> None:
    before = {**CHAOS, "metadata": {**CHAOS["metadata"], "resourceVersion": "7", "managedFields": [{"a": 1}]}}
    after = {
        **CHAOS,
        "metadata": {**CHAOS["metadata"], "resourceVersion": "8", "managedFields": [{"a": 2}]},
        "status": {"x": 1},
    }
    assert status_only(before, after)
    assert not status_only(before, {**before, "metadata": {**before["metadata"], "resourceVersion": "8"}})


def test_the_status_subject_is_not_among_the_object_changes() -> None:
    status = subjects.status_subject("NetworkChaos", "ns", "a.b")
    assert status.startswith("chaos.obj.") and len(status.split(".")) == 6
    assert len(subjects.object_subject("NetworkChaos", "ns", "a.b").split(".")) == len(
        subjects.OBJECT_CHANGES.split(".")
    )
