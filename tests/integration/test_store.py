"""ObjectStore against a real nats-server: Kubernetes-like create/get/list/apply/delete over the KV
bucket `objects`, with compare-and-set so concurrent writers never lose an update.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from chaosbus.common import bus as busmod
from chaosbus.common import subjects
from chaosbus.common.objects import ImmutableSpec
from chaosbus.common.store import Conflict, NotFound, ObjectStore

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(bus: busmod.Bus) -> ObjectStore:
    return ObjectStore(await bus.bucket(subjects.OBJECT_STORE))


def chaos(name: str = "x", namespace: str = "default", kind: str = "PodChaos", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, **meta},
        "spec": {"action": "pod-kill", "mode": "one", "selector": {}},
    }


def names(objs: list[dict[str, Any]]) -> list[str]:
    return [f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}" for o in objs]


# --- create / get / list -------------------------------------------------------------------------


async def test_create_then_get_returns_the_stored_object(store: ObjectStore) -> None:
    created = await store.create(chaos(labels={"a": "b"}))
    got = await store.get("PodChaos", "default", "x")
    assert got == created
    m = got["metadata"]
    assert m["uid"] and m["creationTimestamp"] and m["generation"] == 1 and m["labels"] == {"a": "b"}


async def test_create_twice_conflicts(store: ObjectStore) -> None:
    await store.create(chaos())
    with pytest.raises(Conflict, match="already exists"):
        await store.create(chaos())


async def test_create_after_delete_is_a_new_object(store: ObjectStore) -> None:
    first = await store.create(chaos())
    await store.delete("PodChaos", "default", "x")
    second = await store.create(chaos())
    assert second["metadata"]["uid"] != first["metadata"]["uid"]


async def test_get_missing_is_none(store: ObjectStore) -> None:
    assert await store.get("PodChaos", "default", "nope") is None


async def test_dotted_names_are_stored_and_found(store: ObjectStore) -> None:
    await store.create(chaos("web.0"))
    await store.create(chaos("web"))
    got = await store.get("PodChaos", "default", "web.0")
    assert got is not None and got["metadata"]["name"] == "web.0"
    assert names(await store.list("PodChaos", "default")) == ["PodChaos/default/web", "PodChaos/default/web.0"]


async def test_cluster_scoped_objects_have_no_namespace(store: ObjectStore) -> None:
    await store.create({"kind": "Node", "metadata": {"name": "n1", "namespace": "ignored"}})
    assert await store.get("Node", "", "n1") is not None
    assert names(await store.list("Node")) == ["Node/ignored/n1"]


async def test_list_empty_store(store: ObjectStore) -> None:
    assert await asyncio.wait_for(store.list(), 5) == []


@pytest.fixture
async def populated(store: ObjectStore) -> ObjectStore:
    for obj in (
        chaos("b", "prod"),
        chaos("a", "prod"),
        chaos("a", "dev"),
        chaos("n", "prod", kind="NetworkChaos"),
        {"kind": "Pod", "metadata": {"name": "p", "namespace": "prod"}},
    ):
        await store.create(obj)
    return store


@pytest.mark.parametrize(
    ("kind", "namespace", "expected"),
    [
        ("PodChaos", "prod", ["PodChaos/prod/a", "PodChaos/prod/b"]),
        ("PodChaos", "dev", ["PodChaos/dev/a"]),
        ("PodChaos", "pro", []),
        ("PodChaos", None, ["PodChaos/dev/a", "PodChaos/prod/a", "PodChaos/prod/b"]),
        ("NetworkChaos", None, ["NetworkChaos/prod/n"]),
        ("Pod", "prod", ["Pod/prod/p"]),
        ("HelloWorldChaos", None, []),
        (None, None, ["NetworkChaos/prod/n", "Pod/prod/p", "PodChaos/dev/a", "PodChaos/prod/a", "PodChaos/prod/b"]),
        (None, "prod", ["NetworkChaos/prod/n", "Pod/prod/p", "PodChaos/prod/a", "PodChaos/prod/b"]),
    ],
)
async def test_list_by_kind_and_namespace(
    populated: ObjectStore, kind: str | None, namespace: str | None, expected: list[str]
) -> None:
    assert names(await populated.list(kind, namespace)) == expected


async def test_list_leaves_out_deleted_objects(populated: ObjectStore) -> None:
    await populated.delete("PodChaos", "prod", "a")
    assert names(await populated.list("PodChaos", "prod")) == ["PodChaos/prod/b"]


async def test_list_carries_resource_versions(populated: ObjectStore) -> None:
    for obj in await populated.list():
        got = await populated.get(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        assert got is not None and obj["metadata"]["resourceVersion"] == got["metadata"]["resourceVersion"]


# --- apply ---------------------------------------------------------------------------------------


async def test_apply_created_configured_unchanged(store: ObjectStore) -> None:
    created, r1 = await store.apply(chaos(), immutable_spec=True)
    configured, r2 = await store.apply(chaos(labels={"team": "a"}), immutable_spec=True)
    unchanged, r3 = await store.apply(chaos(labels={"team": "a"}), immutable_spec=True)
    assert (r1, r2, r3) == ("created", "configured", "unchanged")
    assert configured["metadata"]["uid"] == created["metadata"]["uid"]
    assert configured["metadata"]["labels"] == {"team": "a"}
    assert unchanged == configured


async def test_apply_creates_again_what_was_deleted_and_removed(store: ObjectStore) -> None:
    first, _ = await store.apply(chaos(), immutable_spec=True)
    assert await store.delete("PodChaos", "default", "x") == "deleted"  # no finalizers: gone at once
    again, result = await store.apply(chaos(), immutable_spec=True)
    assert result == "created" and again["metadata"]["uid"] != first["metadata"]["uid"]
    got = await store.get("PodChaos", "default", "x")
    assert got is not None and got["metadata"]["uid"] == again["metadata"]["uid"]


async def test_apply_refuses_spec_change_of_an_experiment(store: ObjectStore) -> None:
    await store.apply(chaos(), immutable_spec=True)
    changed = chaos()
    changed["spec"]["mode"] = "all"
    with pytest.raises(ImmutableSpec, match="Cannot update chaos spec"):
        await store.apply(changed, immutable_spec=True)
    got = await store.get("PodChaos", "default", "x")
    assert got is not None and got["spec"]["mode"] == "one"


async def test_apply_spec_change_of_a_mutable_kind_bumps_generation(store: ObjectStore) -> None:
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}}
    await store.apply(pod, immutable_spec=False)
    pod2 = {**pod, "spec": {"containers": [{"name": "c"}]}}
    stored, result = await store.apply(pod2, immutable_spec=False)
    assert (result, stored["metadata"]["generation"], stored["spec"]) == ("configured", 2, pod2["spec"])


async def test_apply_ignores_client_resource_version(store: ObjectStore) -> None:
    await store.apply(chaos(), immutable_spec=True)
    _, result = await store.apply(chaos(resourceVersion="999"), immutable_spec=True)
    assert result == "unchanged"


# --- mutate (compare-and-set) --------------------------------------------------------------------


def bump(obj: dict[str, Any]) -> dict[str, Any]:
    ann = obj["metadata"].setdefault("annotations", {})
    ann["count"] = str(int(ann.get("count", "0")) + 1)
    return obj


async def test_concurrent_mutations_lose_no_update(store: ObjectStore) -> None:
    await store.create(chaos())

    async def worker() -> None:
        for _ in range(3):
            await store.mutate("PodChaos", "default", "x", bump)

    await asyncio.gather(*(worker() for _ in range(10)))
    got = await store.get("PodChaos", "default", "x")
    assert got is not None and got["metadata"]["annotations"]["count"] == "30"


async def test_concurrent_mutations_from_separate_connections_lose_no_update(
    store: ObjectStore, nats_server: Any
) -> None:
    await store.create(chaos())
    buses = [await busmod.connect(nats_server.url, f"w{i}") for i in range(4)]
    try:
        stores = [ObjectStore(await b.bucket(subjects.OBJECT_STORE)) for b in buses]

        async def worker(s: ObjectStore) -> None:
            for _ in range(5):
                await s.mutate("PodChaos", "default", "x", bump)

        await asyncio.gather(*(worker(s) for s in stores))
    finally:
        for b in buses:
            await b.close()
    got = await store.get("PodChaos", "default", "x")
    assert got is not None and got["metadata"]["annotations"]["count"] == "20"


async def test_mutate_returning_none_writes_nothing(store: ObjectStore) -> None:
    created = await store.create(chaos())
    same = await store.mutate("PodChaos", "default", "x", lambda o: None)
    assert same is not None and same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_mutate_missing_raises_not_found(store: ObjectStore) -> None:
    with pytest.raises(NotFound):
        await store.mutate("PodChaos", "default", "ghost", bump)


async def test_mutate_never_sees_the_resource_version(store: ObjectStore) -> None:
    await store.create(chaos())
    seen: list[dict[str, Any]] = []
    await store.mutate("PodChaos", "default", "x", lambda o: seen.append(o) or None)  # type: ignore[func-returns-value]
    assert "resourceVersion" not in seen[0]["metadata"]


# --- delete and finalizers -----------------------------------------------------------------------


async def test_delete_without_finalizers_removes(store: ObjectStore) -> None:
    await store.create(chaos())
    assert await store.delete("PodChaos", "default", "x") == "deleted"
    assert await store.get("PodChaos", "default", "x") is None


async def test_delete_missing_is_notfound(store: ObjectStore) -> None:
    assert await store.delete("PodChaos", "default", "x") == "notfound"


async def test_delete_with_finalizers_marks_deleting(store: ObjectStore) -> None:
    await store.create(chaos(finalizers=["chaos-mesh/records"]))
    assert await store.delete("PodChaos", "default", "x") == "deleting"
    got = await store.get("PodChaos", "default", "x")
    assert got is not None and got["metadata"]["deletionTimestamp"]
    assert got["metadata"]["finalizers"] == ["chaos-mesh/records"]


async def test_second_delete_keeps_the_first_deletion_timestamp(store: ObjectStore) -> None:
    await store.create(chaos(finalizers=["f"]))
    await store.delete("PodChaos", "default", "x")
    first = await store.get("PodChaos", "default", "x")
    assert await store.delete("PodChaos", "default", "x") == "deleting"
    again = await store.get("PodChaos", "default", "x")
    assert first == again


def drop_finalizer(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def fn(obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["finalizers"] = [f for f in obj["metadata"]["finalizers"] if f != name]
        return obj

    return fn


async def test_object_vanishes_when_the_last_finalizer_is_removed(store: ObjectStore) -> None:
    await store.create(chaos(finalizers=["a", "b"]))
    await store.delete("PodChaos", "default", "x")
    still = await store.mutate("PodChaos", "default", "x", drop_finalizer("a"))
    assert still is not None and still["metadata"]["finalizers"] == ["b"]
    assert await store.mutate("PodChaos", "default", "x", drop_finalizer("b")) is None
    assert await store.get("PodChaos", "default", "x") is None


async def test_removing_finalizers_of_a_live_object_keeps_it(store: ObjectStore) -> None:
    await store.create(chaos(finalizers=["a"]))
    out = await store.mutate("PodChaos", "default", "x", drop_finalizer("a"))
    assert out is not None and await store.get("PodChaos", "default", "x") is not None


# --- resourceVersion -----------------------------------------------------------------------------


async def test_resource_version_changes_on_every_write(store: ObjectStore) -> None:
    versions = [(await store.create(chaos(finalizers=["f"])))["metadata"]["resourceVersion"]]
    applied, _ = await store.apply(chaos(labels={"a": "1"}), immutable_spec=True)
    versions.append(applied["metadata"]["resourceVersion"])
    for _ in range(2):
        out = await store.mutate("PodChaos", "default", "x", bump)
        assert out is not None
        versions.append(out["metadata"]["resourceVersion"])
    await store.delete("PodChaos", "default", "x")
    got = await store.get("PodChaos", "default", "x")
    assert got is not None
    versions.append(got["metadata"]["resourceVersion"])
    assert len(set(versions)) == len(versions) == 5
    assert [int(v) for v in versions] == sorted(int(v) for v in versions)


async def test_resource_version_is_not_stored_in_the_value(store: ObjectStore, bus: busmod.Bus) -> None:
    await store.create(chaos())
    kv = await bus.kv(subjects.OBJECT_STORE.name)
    entry = await kv.get(subjects.object_key("PodChaos", "default", "x"))
    assert entry.value is not None and b"resourceVersion" not in entry.value


async def test_a_listing_right_after_each_write_sees_it(store: ObjectStore) -> None:
    """The server answers a watch's info request apart from the values it pushes, so a listing
    that trusts the client's receive count can end before a value already sent: `get` then says
    "No resources found" for an object just created. Each listing here follows its write at once.
    """
    assert await store.list("PodChaos", "snap") == []
    for i in range(150):
        await store.create(chaos(f"p{i:03d}", namespace="snap"))
        listed = names(await store.list("PodChaos", "snap"))
        assert len(listed) == i + 1, f"listing {i} missed objects: {len(listed)} of {i + 1}"
    await store.delete("PodChaos", "snap", "p000")
    listed = names(await store.list("PodChaos", "snap"))
    assert "PodChaos/snap/p000" not in listed and len(listed) == 149
