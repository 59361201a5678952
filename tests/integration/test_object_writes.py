"""ObjectWrite end to end over a real nats-server: the scheduler's decided writes travel on the
CHAOS_WRITE stream (deduplicated by write id) and the recorder's durable consumer carries them out
on the local object store: create (idempotent), status merge patch, annotations, delete by uid.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
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
_ids = itertools.count(1)


@pytest.fixture
async def store(bus: busmod.Bus) -> AsyncIterator[ObjectStore]:
    store = ObjectStore(await bus.bucket(subjects.OBJECT_STORE))
    rec = Recorder(store, StoreEvents(store), RecorderMetrics(), max_events=10)
    task = asyncio.ensure_future(bus.consume(subjects.WRITES, rec.on_write, durable="recorder-writes"))
    yield store
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def child(name: str, owner_uid: str = "sched-uid") -> dict[str, Any]:
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "HelloWorldChaos",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"managed-by": "s"},
            "ownerReferences": [
                {
                    "apiVersion": "chaos-mesh.org/v1alpha1",
                    "kind": "Schedule",
                    "name": "s",
                    "uid": owner_uid,
                    "controller": True,
                }
            ],
        },
        "spec": {"mode": "all", "selector": {}, "duration": "1s"},
    }


async def send(
    bus: busmod.Bus,
    op: str,
    name: str,
    obj: Any = None,
    *,
    kind: str = "HelloWorldChaos",
    uid: str = "",
    write_id: str = "",
    **kw: Any,
) -> str:
    w = m.ObjectWrite(
        write_id=write_id or f"w{next(_ids)}",
        op=op,
        kind=kind,  # type: ignore[arg-type]
        namespace="default",
        name=name,
        uid=uid,
        object=msgspec.Raw(msgspec.json.encode(obj)),
        **kw,
    )
    await bus.publish(subjects.WRITES, subjects.write_subject(kind, "default", name), w, msg_id=w.write_id)
    return w.write_id


async def until(fn: Callable[[], Any], tries: int = 200) -> Any:
    for _ in range(tries):  # 10 s at most
        if value := await fn():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached within 10 s")


async def test_create_is_idempotent_and_a_foreign_same_name_object_is_left_alone(
    bus: busmod.Bus, store: ObjectStore
) -> None:
    await send(bus, "create", "s-1", child("s-1"))
    first = await until(lambda: store.get("HelloWorldChaos", "default", "s-1"))
    await send(bus, "create", "s-1", child("s-1"))  # a restarted scheduler deciding the same child
    await send(bus, "create", "s-1", child("s-1", owner_uid="other"))  # not this child: refused, logged
    await send(bus, "create", "marker", child("marker"))  # processed after the two above
    await until(lambda: store.get("HelloWorldChaos", "default", "marker"))
    again = await store.get("HelloWorldChaos", "default", "s-1")
    assert again is not None and again["metadata"]["uid"] == first["metadata"]["uid"]
    assert again["metadata"]["ownerReferences"][0]["uid"] == "sched-uid"


async def test_duplicate_write_ids_are_stored_once(bus: busmod.Bus, store: ObjectStore) -> None:
    await send(bus, "create", "s-1", child("s-1"))
    await until(lambda: store.get("HelloWorldChaos", "default", "s-1"))
    await send(bus, "delete", "s-1", write_id="del-1")  # no uid: whatever object has the name
    await until(lambda: _gone(store, "s-1"))
    await send(bus, "create", "s-1", child("s-1"), write_id="create-again")
    await send(bus, "delete", "s-1", write_id="del-1")  # deduplicated by JetStream: never arrives
    await send(bus, "create", "marker", child("marker"))
    await until(lambda: store.get("HelloWorldChaos", "default", "marker"))
    info = await bus.js.stream_info(subjects.WRITES.name)
    assert info.state.messages == 0  # a work queue: every write acked and removed
    assert await store.get("HelloWorldChaos", "default", "s-1") is not None


async def test_status_patch_annotations_and_delete_by_uid(bus: busmod.Bus, store: ObjectStore) -> None:
    await send(bus, "create", "s-1", child("s-1"))
    obj = await until(lambda: store.get("HelloWorldChaos", "default", "s-1"))
    uid = obj["metadata"]["uid"]
    await send(bus, "status", "s-1", {"time": "2026-01-01T00:00:00Z", "active": [{"name": "a"}]}, uid=uid)
    await send(bus, "status", "s-1", {"active": None}, uid=uid)
    await send(bus, "annotate", "s-1", uid=uid, annotations={"experiment.chaos-mesh.org/pause": "true"})

    async def written() -> dict[str, Any] | None:
        got = await store.get("HelloWorldChaos", "default", "s-1")
        return got if got and got.get("metadata", {}).get("annotations") else None

    got = await until(written)
    assert got["status"] == {"time": "2026-01-01T00:00:00Z"}
    assert got["metadata"]["annotations"] == {"experiment.chaos-mesh.org/pause": "true"}
    await send(bus, "delete", "s-1", uid="not-this-one")
    await send(bus, "create", "marker", child("marker"))
    await until(lambda: store.get("HelloWorldChaos", "default", "marker"))
    assert await store.get("HelloWorldChaos", "default", "s-1") is not None  # uid precondition held
    await send(bus, "delete", "s-1", uid=uid)
    await until(lambda: _gone(store, "s-1"))


async def _gone(store: ObjectStore, name: str) -> bool:
    return await store.get("HelloWorldChaos", "default", name) is None


async def test_event_writes_are_kept_per_object_and_reason_and_go_with_the_object(
    bus: busmod.Bus, store: ObjectStore
) -> None:
    """Local mode keeps Events in the object store (where `chaosbus describe` reads them): a repeat
    is counted, a redelivered write counted once, and they are deleted with their object.
    """
    sched = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "Schedule",
        "metadata": {"name": "s", "namespace": "default"},
        "spec": {"schedule": "@every 2s", "type": "HelloWorldChaos", "helloWorldChaos": {"mode": "all"}},
    }
    uid = (await store.create(sched))["metadata"]["uid"]
    body = {"type": "Warning", "message": "Forbid spawning new job because: s-1 is still running"}
    for write_id in ("ev-1", "ev-2", "ev-2"):  # ev-2 twice: deduplicated on the stream
        await send(bus, "event", "s", body, kind="Schedule", uid=uid, reason="Forbid", write_id=write_id)
    await send(bus, "create", "s-2", child("s-2", owner_uid=uid), reason="Spawned")  # Spawned on the owner

    async def both() -> list[dict[str, Any]] | None:
        found = await store.list("Event", "default")
        return found if {e["reason"] for e in found} == {"Forbid", "Spawned"} else None

    events = {e["reason"]: e for e in await until(both)}
    assert events["Forbid"]["count"] == 2 and events["Forbid"]["message"] == body["message"]
    assert events["Forbid"]["involvedObject"] == {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "Schedule",
        "name": "s",
        "namespace": "default",
        "uid": uid,
    }
    assert events["Spawned"]["message"] == "Create new object: s-2"
    text = await resources.describe(store, "Schedule", "s", "default")  # what `chaosbus describe` prints
    assert "Records:" not in text and "Phase:" not in text  # a Schedule is no experiment
    events_section = text.split("Events:", 1)[1].splitlines()
    assert any(
        ln.split()[:2] == ["Warning", "Forbid"] and "(x2 since" in ln and ln.endswith(body["message"])
        for ln in events_section
    ), text
    assert any(ln.split()[:2] == ["Normal", "Spawned"] for ln in events_section), text
    other = await store.create({**sched, "metadata": {"name": "s2", "namespace": "default"}})
    other_uid = other["metadata"]["uid"]
    await send(bus, "event", "s2", body, kind="Schedule", uid=other_uid, reason="Forbid", write_id="ev-3")
    await until(lambda: store.get("Event", "default", "s2.schedule.forbid"))

    def deleted(name: str, obj_uid: str) -> m.ObjectEvent:
        return m.ObjectEvent(
            type="DELETED",
            kind="Schedule",
            namespace="default",
            name=name,
            uid=obj_uid,
            object=msgspec.Raw(msgspec.json.encode(sched)),
        )

    rec = Recorder(store, StoreEvents(store), RecorderMetrics(), max_events=10)
    await rec.on_object(deleted("s2", other_uid))  # replayed at start: swept in one pass afterwards
    assert await store.get("Event", "default", "s2.schedule.forbid") is not None
    rec.replayed.set()
    await rec.sweep_events()
    assert await store.get("Event", "default", "s2.schedule.forbid") is None
    assert len(await store.list("Event", "default")) == 2  # s's Events are untouched
    await rec.on_object(deleted("s", uid))  # live: its own Events only
    assert await store.list("Event", "default") == []
