"""Local mode's object-lifecycle rules (pure): create, update (apply), annotate, delete, kind names."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from chaosbus.common import objects as o

NOW = "2026-01-02T03:04:05Z"
LATER = "2026-01-02T04:00:00Z"


def chaos(**meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "PodChaos",
        "metadata": {"name": "x", "namespace": "ns", **meta},
        "spec": {"action": "pod-kill", "mode": "one"},
    }


def stored(**meta: Any) -> dict[str, Any]:
    return o.prepare_create(chaos(**meta), uid="u1", now=NOW)


# --- create --------------------------------------------------------------------------------------


def test_create_fills_server_fields() -> None:
    m = stored()["metadata"]
    assert (m["uid"], m["creationTimestamp"], m["generation"]) == ("u1", NOW, 1)


@pytest.mark.parametrize("field", ["uid", "creationTimestamp", "generation"])
def test_create_overrides_client_supplied_server_fields(field: str) -> None:
    m = o.prepare_create(chaos(**{field: "client"}), uid="u1", now=NOW)["metadata"]
    assert m[field] == {"uid": "u1", "creationTimestamp": NOW, "generation": 1}[field]


@pytest.mark.parametrize("field", ["resourceVersion", "deletionTimestamp"])
def test_create_drops_client_set_server_fields(field: str) -> None:
    assert field not in o.prepare_create(chaos(**{field: "7"}), uid="u1", now=NOW)["metadata"]


def test_create_drops_client_status_of_experiments() -> None:
    obj = chaos()
    obj["status"] = {"experiment": {"desiredPhase": "Run"}}
    assert "status" not in o.prepare_create(obj, uid="u1", now=NOW)


def test_create_keeps_pod_status() -> None:
    pod = {"kind": "Pod", "metadata": {"name": "p"}, "status": {"podIP": "10.0.0.2"}}
    assert o.prepare_create(pod, uid="u1", now=NOW)["status"] == {"podIP": "10.0.0.2"}


def test_create_keeps_user_fields() -> None:
    out = o.prepare_create(chaos(labels={"a": "b"}, finalizers=["f"]), uid="u1", now=NOW)
    assert (out["spec"], out["metadata"]["labels"], out["metadata"]["finalizers"]) == (
        chaos()["spec"],
        {"a": "b"},
        ["f"],
    )


def test_create_does_not_mutate_its_input() -> None:
    obj = chaos(resourceVersion="3")
    before = copy.deepcopy(obj)
    o.prepare_create(obj, uid="u1", now=NOW)
    assert obj == before


def test_create_fills_metadata_when_missing() -> None:
    assert o.prepare_create({"kind": "Namespace"}, uid="u1", now=NOW)["metadata"]["uid"] == "u1"


# --- update --------------------------------------------------------------------------------------


@pytest.mark.parametrize("immutable", [True, False])
def test_update_identical_is_unchanged(immutable: bool) -> None:
    assert o.prepare_update(stored(), chaos(), immutable_spec=immutable) is None


def test_update_without_spec_leaves_spec_alone() -> None:
    new = chaos(labels={"a": "b"})
    del new["spec"]
    out = o.prepare_update(stored(), new, immutable_spec=True)
    assert out is not None and out["spec"] == chaos()["spec"]


@pytest.mark.parametrize("field", ["labels", "annotations"])
def test_update_merges_labels_and_annotations(field: str) -> None:
    old = stored(**{field: {"keep": "1", "change": "old"}})
    out = o.prepare_update(old, chaos(**{field: {"change": "new", "add": "2"}}), immutable_spec=True)
    assert out is not None
    assert out["metadata"][field] == {"keep": "1", "change": "new", "add": "2"}


@pytest.mark.parametrize("field", ["labels", "annotations"])
def test_update_without_the_field_keeps_it(field: str) -> None:
    assert o.prepare_update(stored(**{field: {"a": "1"}}), chaos(), immutable_spec=True) is None


def test_update_keeps_server_fields_and_status() -> None:
    old = stored(finalizers=["chaos-mesh/records"])
    old["status"] = {"experiment": {"desiredPhase": "Run"}}
    new = chaos(uid="forged", generation=99, finalizers=[], labels={"a": "b"})
    new["status"] = {"experiment": {"desiredPhase": "Stop"}}
    out = o.prepare_update(old, new, immutable_spec=True)
    assert out is not None
    assert (out["metadata"]["uid"], out["metadata"]["generation"], out["metadata"]["finalizers"]) == (
        "u1",
        1,
        ["chaos-mesh/records"],
    )
    assert out["status"] == {"experiment": {"desiredPhase": "Run"}}


def test_spec_change_bumps_generation_when_mutable() -> None:
    new = chaos()
    new["spec"] = {"action": "pod-failure", "mode": "all"}
    out = o.prepare_update(stored(), new, immutable_spec=False)
    assert out is not None
    assert (out["spec"], out["metadata"]["generation"]) == (new["spec"], 2)


def test_metadata_only_change_keeps_generation() -> None:
    out = o.prepare_update(stored(), chaos(labels={"a": "b"}), immutable_spec=False)
    assert out is not None and out["metadata"]["generation"] == 1


def test_spec_change_is_refused_when_immutable() -> None:
    new = chaos()
    new["spec"]["mode"] = "all"
    with pytest.raises(o.ImmutableSpec, match="Cannot update chaos spec"):
        o.prepare_update(stored(), new, immutable_spec=True)


def test_update_does_not_mutate_old() -> None:
    old = stored()
    before = copy.deepcopy(old)
    o.prepare_update(old, chaos(labels={"a": "b"}), immutable_spec=True)
    assert old == before


# --- annotate ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "changes", "after"),
    [
        ({}, {"a": "1"}, {"a": "1"}),
        ({"a": "1"}, {"b": "2"}, {"a": "1", "b": "2"}),
        ({"a": "1"}, {"a": "2"}, {"a": "2"}),
        ({"a": "1", "b": "2"}, {"a": None}, {"b": "2"}),
        ({"a": "1"}, {"a": None, "c": "3"}, {"c": "3"}),
    ],
)
def test_set_annotations(before: dict[str, str], changes: dict[str, str | None], after: dict[str, str]) -> None:
    out = o.set_annotations(stored(annotations=before), changes)
    assert out is not None and out["metadata"]["annotations"] == after


def test_removing_the_last_annotation_drops_the_field() -> None:
    out = o.set_annotations(stored(annotations={"a": "1"}), {"a": None})
    assert out is not None and "annotations" not in out["metadata"]


@pytest.mark.parametrize(
    ("before", "changes"),
    [
        ({"a": "1"}, {"a": "1"}),
        ({"a": "1"}, {"b": None}),
        (None, {"b": None}),
    ],
)
def test_set_annotations_unchanged_is_none(before: dict[str, str] | None, changes: dict[str, str | None]) -> None:
    obj = stored() if before is None else stored(annotations=before)
    assert o.set_annotations(obj, changes) is None


# --- delete --------------------------------------------------------------------------------------


@pytest.mark.parametrize("finalizers", [None, []])
def test_delete_without_finalizers_removes_now(finalizers: list[str] | None) -> None:
    obj = stored() if finalizers is None else stored(finalizers=finalizers)
    assert o.mark_deleting(obj, now=LATER) is None


def test_delete_with_finalizers_sets_deletion_timestamp() -> None:
    out = o.mark_deleting(stored(finalizers=["chaos-mesh/records"]), now=LATER)
    assert out is not None
    assert (out["metadata"]["deletionTimestamp"], out["metadata"]["finalizers"]) == (LATER, ["chaos-mesh/records"])
    assert o.is_deleting(out) and not o.ready_to_vanish(out)


def test_delete_again_keeps_the_first_deletion_timestamp() -> None:
    first = o.mark_deleting(stored(finalizers=["f"]), now=NOW)
    assert first is not None
    again = o.mark_deleting(first, now=LATER)
    assert again is not None and again["metadata"]["deletionTimestamp"] == NOW


@pytest.mark.parametrize(
    ("meta", "deleting", "vanish"),
    [
        ({}, False, False),
        ({"finalizers": ["f"]}, False, False),
        ({"deletionTimestamp": NOW, "finalizers": ["f"]}, True, False),
        ({"deletionTimestamp": NOW, "finalizers": []}, True, True),
        ({"deletionTimestamp": NOW}, True, True),
    ],
)
def test_is_deleting_and_ready_to_vanish(meta: dict[str, Any], deleting: bool, vanish: bool) -> None:
    obj = chaos(**meta)
    assert (o.is_deleting(obj), o.ready_to_vanish(obj)) == (deleting, vanish)


# --- kinds and time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("PodChaos", "PodChaos"),
        ("podchaos", "PodChaos"),
        ("podchaoses", "PodChaos"),
        ("podchaos.chaos-mesh.org", "PodChaos"),
        ("NetworkChaos", "NetworkChaos"),
        ("networkchaos.chaos-mesh.org", "NetworkChaos"),
        ("NETWORKCHAOS", "NetworkChaos"),
        ("helloworldchaoses", "HelloWorldChaos"),
        ("pod", "Pod"),
        ("pods", "Pod"),
        ("po", "Pod"),
        ("Pod", "Pod"),
        ("ns", "Namespace"),
        ("namespaces", "Namespace"),
        ("no", "Node"),
        ("nodes", "Node"),
        ("stresschaos", "StressChaos"),
        ("nwc", "NetworkChaos"),
        ("poc", "PodChaos"),
        ("wf", "Workflow"),
    ],
)
def test_canonical_kind(text: str, kind: str) -> None:
    assert o.canonical_kind(text) == kind


@pytest.mark.parametrize("text", ["deployment", "", "podchaosx", "chaos"])
def test_canonical_kind_unknown(text: str) -> None:
    assert o.canonical_kind(text) is None


def test_rfc3339_round_trip() -> None:
    assert o.parse_rfc3339(NOW) == 1767323045.0
    assert abs(o.parse_rfc3339(o.now_rfc3339()) - time.time()) < 2
