"""The recorder's pure ObjectWrite rules: RFC 7386 merge of status, annotations by uid, and when an
existing object already is the child a create asks for.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaosbus.common import messages as m
from chaosbus.common import objects
from chaosbus.recorder import writes

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)


def write(op: str, obj: Any = None, uid: str = "u1", **kw: Any) -> m.ObjectWrite:
    return m.ObjectWrite(
        write_id="w",
        op=op,
        kind="Schedule",
        namespace="ns",
        name="s",  # type: ignore[arg-type]
        uid=uid,
        object=msgspec.Raw(msgspec.json.encode(obj)),
        **kw,
    )


def stored(status: Any = None, **meta: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "kind": "Schedule",
        "metadata": {"name": "s", "namespace": "ns", "uid": "u1", **meta},
        "spec": {"schedule": "@every 2s"},
    }
    if status is not None:
        obj["status"] = status
    return obj


def test_merge_patch_follows_rfc_7386_examples() -> None:
    assert objects.merge_patch({"a": "b", "c": {"d": "e", "f": "g"}}, {"a": "z", "c": {"f": None}}) == {
        "a": "z",
        "c": {"d": "e"},
    }
    assert objects.merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert objects.merge_patch({"a": "b"}, ["c"]) == ["c"]
    assert objects.merge_patch("x", {"a": {"b": None}}) == {"a": {}}


@given(JSON, JSON)
def test_merge_patch_is_idempotent(target: Any, patch: Any) -> None:
    once = objects.merge_patch(target, patch)
    assert objects.merge_patch(once, patch) == once


def test_status_patch_sets_and_removes_keys_of_the_named_uid_only() -> None:
    obj = stored({"time": "2026-01-01T00:00:00Z", "active": [{"name": "old"}]})
    new = writes.status_change(obj, write("status", {"time": "2026-01-01T00:00:02Z", "active": None}))
    assert new is not None and new["status"] == {"time": "2026-01-01T00:00:02Z"}
    assert obj["status"]["active"] == [{"name": "old"}]  # the input is not modified
    assert writes.status_change(obj, write("status", {"time": "x"}, uid="someone-else")) is None
    assert writes.status_change(new, write("status", {"time": "2026-01-01T00:00:02Z"})) is None  # unchanged


def test_status_patch_that_is_not_an_object_is_refused_with_the_object_named() -> None:
    with pytest.raises(ValueError, match="Schedule/ns/s: a status patch must be a JSON object"):
        writes.status_change(stored(), write("status", ["x"]))


def test_annotations_set_and_removed() -> None:
    obj = stored(annotations={"keep": "1", "experiment.chaos-mesh.org/pause": "true"})
    new = writes.annotation_change(
        obj, write("annotate", annotations={"experiment.chaos-mesh.org/pause": None, "x": "y"})
    )
    assert new is not None and new["metadata"]["annotations"] == {"keep": "1", "x": "y"}
    assert writes.annotation_change(obj, write("annotate", uid="u2", annotations={"x": "y"})) is None


def child(owner_uid: str = "s-uid", spec: Any = None, **labels: str) -> dict[str, Any]:
    return {
        "kind": "PodChaos",
        "metadata": {
            "name": "s-1",
            "namespace": "ns",
            "labels": labels,
            "ownerReferences": [{"kind": "Schedule", "name": "s", "uid": owner_uid}],
        },
        "spec": spec if spec is not None else {"action": "pod-kill"},
    }


def test_create_target_is_named_and_namespaced_by_the_write() -> None:
    w = m.ObjectWrite(
        write_id="w",
        op="create",
        kind="PodChaos",
        namespace="ns",
        name="s-1",
        object=msgspec.Raw(msgspec.json.encode({"metadata": {"name": "other"}, "spec": {}})),
    )
    obj = writes.wanted_object(w)
    assert (obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"]) == ("PodChaos", "s-1", "ns")


def test_existing_child_with_same_owner_and_labels_is_the_same_even_with_server_defaults() -> None:
    wanted = child(**{"managed-by": "s"})
    existing = child(spec={"action": "pod-kill", "mode": "one"}, **{"managed-by": "s", "extra": "1"})
    existing["metadata"]["uid"] = "c-uid"
    assert writes.same_object(existing, wanted)
    assert not writes.same_object(child("another-schedule", **{"managed-by": "s"}), wanted)
    assert not writes.same_object(child(**{"managed-by": "t"}), wanted)


def test_without_owners_the_spec_decides() -> None:
    a, b = child(), child(spec={"action": "pod-failure"})
    for obj in (a, b):
        obj["metadata"].pop("ownerReferences")
    assert writes.same_object(a, child() | {"metadata": {"name": "s-1"}})
    assert not writes.same_object(b, a)


def test_an_event_write_names_reason_type_and_message_or_is_refused() -> None:
    w = write(
        "event",
        {"type": "Warning", "message": "Forbid spawning new job because: s-1 is still running"},
        reason="Forbid",
    )
    event = writes.event_of(w)
    assert (event.type, event.reason, event.message) == (
        "Warning",
        "Forbid",
        "Forbid spawning new job because: s-1 is still running",
    )
    assert writes.involved(w)["metadata"] == {"name": "s", "namespace": "ns", "uid": "u1"}
    for bad in (
        write("event", {"type": "Loud", "message": "x"}, reason="Forbid"),
        write("event", {"type": "Normal"}),  # no reason
        write("event", "not an object", reason="Forbid"),
    ):
        with pytest.raises(ValueError, match="event write needs a reason"):
            writes.event_of(bad)


def test_local_events_count_repeats_per_object_and_reason_and_restart_for_a_new_uid() -> None:
    about = stored()
    first = writes.event_of(write("event", {"type": "Warning", "message": "one"}, reason="Forbid"))
    second = writes.event_of(write("event", {"type": "Warning", "message": "two"}, reason="Forbid"))
    ev = writes.local_event(None, about, first, "2026-01-01T00:00:00Z")
    assert ev["metadata"]["name"] == writes.local_event_name(about, "Forbid") == "s.schedule.forbid"
    assert ev["involvedObject"]["uid"] == "u1" and ev["count"] == 1 and ev["type"] == "Warning"
    again = writes.local_event(ev, about, second, "2026-01-01T00:00:05Z")
    assert (again["count"], again["message"], again["firstTimestamp"], again["lastTimestamp"]) == (
        2,
        "two",
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:05Z",
    )
    successor = stored(uid="u2")  # a new object with the same name starts its own count
    assert writes.local_event(again, successor, first, "2026-01-01T00:01:00Z")["count"] == 1


def test_spawned_events_as_chaos_mesh_records_them_on_the_owner() -> None:
    def reason(owner: str, child: str) -> str | None:
        event = writes.spawned_event(owner, child, "c-1")
        return None if event is None else f"{event.reason}: {event.message}"

    assert reason("Schedule", "NetworkChaos") == "Spawned: Create new object: c-1"
    assert reason("WorkflowNode", "NetworkChaos") == "ChaosCRCreated: chaos CR c-1 created"
    assert reason("WorkflowNode", "StatusCheck") == "StatusCheckCreated: status check c-1 created"
    assert reason("Workflow", "WorkflowNode") is None
