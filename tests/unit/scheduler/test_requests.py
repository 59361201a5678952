"""Direct trigger requests parsed without NATS: every malformed request becomes a BadRequest naming
the field (never an exception of another type), and replies carry Chaos Mesh's status shape.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chaosbus.common import messages as m
from chaosbus.scheduler import requests as rq


def partition(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "NetworkChaos",
        "metadata": {"name": "p1"},
        "spec": {"action": "partition", "mode": "all", "selector": {"labelSelectors": {"app": "a"}}},
    }
    obj.update(changes)
    return obj


def bad(fn: Any, data: bytes) -> rq.BadRequest:
    with pytest.raises(rq.BadRequest) as e:
        fn(data)
    return e.value


def test_apply_is_admitted_like_the_cli_does() -> None:
    obj = rq.parse_apply(json.dumps(partition()).encode())
    assert obj["kind"] == "NetworkChaos" and obj["metadata"]["name"] == "p1"
    assert obj["metadata"]["namespace"] == "default"


@pytest.mark.parametrize(
    ("data", "field", "says"),
    [
        (b"{not json", "", "not JSON"),
        (b"[1, 2]", "", "JSON object"),
        (json.dumps(partition(kind="Pod")).encode(), "kind", "expected one of"),
        (json.dumps(partition(apiVersion="v1")).encode(), "apiVersion", "chaos-mesh.org/v1alpha1"),
        (
            json.dumps(partition(spec={"action": "explode", "mode": "all", "selector": {}})).encode(),
            "spec.action",
            "expected one of",
        ),
        (json.dumps(partition(metadata={})).encode(), "metadata.name", ""),
    ],
)
def test_malformed_apply_names_the_field(data: bytes, field: str, says: str) -> None:
    e = bad(rq.parse_apply, data)
    assert e.field == field and says in e.error
    assert e.reply() == m.ErrorReply(error=str(e), field=field)


def test_ref_accepts_kind_aliases_and_defaults_the_namespace() -> None:
    assert rq.parse_ref(b'{"kind": "networkchaos", "name": "p1"}') == m.TriggerRef(
        kind="NetworkChaos", name="p1", namespace="default"
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b'{"kind": "Pod", "name": "x"}', "kind"),
        (b'{"name": "x"}', "kind"),
        (b'{"kind": "NetworkChaos", "name": 3}', "name"),
        (b'{"kind": "NetworkChaos", "name": ""}', "name"),
    ],
)
def test_malformed_ref_names_the_field(data: bytes, field: str) -> None:
    assert bad(rq.parse_ref, data).field == field


def test_list_request_may_be_empty() -> None:
    assert rq.parse_list(b"") == m.TriggerListRequest()
    assert bad(rq.parse_list, b'{"all": "yes"}').field == "all"


def obj(name: str, phase: str, ns: str = "default", kind: str = "NetworkChaos") -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": name, "namespace": ns, "uid": f"u-{name}"},
        "status": {"phase": phase, "experiment": {"desiredPhase": "Run"}},
    }


def test_status_reply_keeps_chaos_meshs_status_shape() -> None:
    s = rq.status_of(obj("a", "Running"))
    assert (s.kind, s.namespace, s.name, s.uid, s.phase) == ("NetworkChaos", "default", "a", "u-a", "Running")
    assert s.status == {"phase": "Running", "experiment": {"desiredPhase": "Run"}}


def test_listing_leaves_out_finished_other_namespaces_and_non_chaos_objects() -> None:
    objs = [obj("a", "Running"), obj("b", "Finished"), obj("c", "Injecting", ns="other"), obj("d", "", kind="Pod")]
    assert [s.name for s in rq.listing(objs, m.TriggerListRequest()).experiments] == ["a", "c"]
    assert [s.name for s in rq.listing(objs, m.TriggerListRequest(namespace="default", all=True)).experiments] == [
        "a",
        "b",
    ]
