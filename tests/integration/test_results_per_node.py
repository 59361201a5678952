"""Results only from the node they are about, on a real nats-server with local mode's
identities (`natsauth.prepare_local`): node n1's injector cannot publish on node n2's result
subject at all (nats-server refuses it), and the recorder, consuming as in production, refuses a
batch whose claimed node is not its subject's and the results n1 sends about a target of n2; n1's
results about its own target change status. A restarted recorder (no decision in memory) reads
the experiment's last decision from the stream and still refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from unit.injector.factories import eventually

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsauth, natsserver, subjects
from chaosbus.common.store import ObjectStore
from chaosbus.recorder.app import Recorder, last_decision
from chaosbus.recorder.metrics import RecorderMetrics
from chaosbus.recorder.sinks import StoreEvents

pytestmark = pytest.mark.integration
KIND = "NetworkChaos"


@pytest.fixture
def secured(tmp_path: Path) -> Any:
    state = tmp_path / "state"
    conf = natsauth.prepare_local(state, ["n1", "n2"])
    server = natsserver.start(tmp_path / "nats", config_file=conf, log_file=tmp_path / "nats-server.log")
    try:
        yield server.url, state
    finally:
        server.stop()


async def connect(url: str, state: Path, user: str) -> busmod.Bus:
    auth = natsauth.ClientAuth(natsauth.seed_file(user, state), admin=user == natsauth.ADMIN)
    return await busmod.connect(url, f"test-{user}", auth=auth)


@contextlib.asynccontextmanager
async def recorder(url: str, state: Path) -> AsyncIterator[tuple[Recorder, ObjectStore]]:
    bus = await connect(url, state, "recorder")
    store = ObjectStore(await bus.bucket(subjects.OBJECT_STORE))
    rec = Recorder(store, StoreEvents(store), RecorderMetrics(), max_events=10)
    rec.replayed.set()
    rec.fetch_decision = last_decision(bus)
    tasks = [
        asyncio.ensure_future(bus.consume(subjects.DECISIONS, rec.on_decision, durable="recorder-phase")),
        asyncio.ensure_future(
            bus.consume_batches(subjects.RESULTS, rec.on_result_batches, durable="recorder", opener=rec.open_result)
        ),
    ]
    try:
        yield rec, store
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=5)
        await bus.close()


def batch(uid: str, cid: str, node: str, target: str) -> m.ResultBatch:
    return m.ResultBatch(
        command_id=cid,
        experiment_uid=uid,
        generation=1,
        kind=KIND,
        namespace="default",
        name="part",
        node=node,
        results=[m.TargetResult(target_id=target, op="apply", ok=True)],
    )


def phases(obj: dict[str, Any] | None) -> dict[str, str]:
    records = (((obj or {}).get("status") or {}).get("experiment") or {}).get("containerRecords") or []
    return {r["id"]: r["phase"] for r in records}


def refused(rec: Recorder, reason: str) -> float:
    return rec.metrics.registry.get_sample_value("chaosbus_recorder_results_refused_total", {"reason": reason}) or 0.0


async def test_a_node_reports_only_on_its_own_targets(secured: tuple[str, Path]) -> None:
    url, state = secured
    admin = await connect(url, state, natsauth.ADMIN)
    await admin.ensure()
    await admin.close()
    cli, scheduler = await connect(url, state, "cli"), await connect(url, state, "scheduler")
    n1 = await connect(url, state, natsauth.user_name("injector", "n1"))
    try:
        store = ObjectStore(await cli.bucket(subjects.OBJECT_STORE))
        created = await store.create(
            {
                "apiVersion": "chaos-mesh.org/v1alpha1",
                "kind": KIND,
                "metadata": {"name": "part", "namespace": "default"},
                "spec": {"action": "partition", "mode": "all", "selector": {}},
            }
        )
        uid = created["metadata"]["uid"]
        decision = m.ExperimentDecision(
            experiment_uid=uid,
            generation=1,
            kind=KIND,
            namespace="default",
            name="part",
            desired_phase="Run",
            records=[m.RecordRef(id="default/on-n1", node="n1"), m.RecordRef(id="default/on-n2", node="n2")],
        )
        await scheduler.publish(subjects.DECISIONS, subjects.decision_subject(uid), decision, msg_id=f"{uid}.d1")

        # nats-server itself: n1 may not publish where n2's results go.
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            forged = busmod.encode(batch(uid, "x0", "n2", "default/on-n2"))
            await n1.js.publish(subjects.result_subject("n2", uid), forged, timeout=1.0)

        async with recorder(url, state) as (rec, store):
            await eventually(lambda: rec.latest.get(uid) is not None, within=20)
            # On its own subject, claiming to be n2: refused whole.
            await n1.publish(
                subjects.RESULTS,
                subjects.result_subject("n1", uid),
                batch(uid, "c1", "n2", "default/on-n2"),
                msg_id="c1",
            )
            # As itself, about n2's target and then its own.
            await n1.publish(
                subjects.RESULTS,
                subjects.result_subject("n1", uid),
                batch(uid, "c2", "n1", "default/on-n2"),
                msg_id="c2",
            )
            await n1.publish(
                subjects.RESULTS,
                subjects.result_subject("n1", uid),
                batch(uid, "c3", "n1", "default/on-n1"),
                msg_id="c3",
            )

            async def own_applied() -> bool:
                return phases(await store.get(KIND, "default", "part")).get("default/on-n1") == "Injected"

            await eventually(own_applied, within=20)
            await eventually(lambda: refused(rec, "subject") == 1 and refused(rec, "node") == 1, within=20)
            assert phases(await store.get(KIND, "default", "part"))["default/on-n2"] == "Not Injected"

        # A restarted recorder knows no decision until it reads the stream's last one.
        async with recorder(url, state) as (rec, store):
            assert rec.latest == {}
            await n1.publish(
                subjects.RESULTS,
                subjects.result_subject("n1", uid),
                batch(uid, "c4", "n1", "default/on-n2"),
                msg_id="c4",
            )
            await eventually(lambda: refused(rec, "node") == 1, within=20)
            assert phases(await store.get(KIND, "default", "part"))["default/on-n2"] == "Not Injected"
    finally:
        for b in (cli, scheduler, n1):
            await b.close()


async def test_a_store_kept_across_the_upgrade_still_delivers_results(bus: busmod.Bus) -> None:
    """Before results were per node the stream took `chaos.result.<uid>` and the durable consumers
    filtered on `chaos.result.*`: such a consumer is pointed at the new subjects, and a result
    journaled under the old subject is published under its node's.
    """

    from nats.js import api

    cfg = api.ConsumerConfig(
        durable_name="old-recorder", ack_policy=api.AckPolicy.EXPLICIT, filter_subject="chaos.result.*"
    )
    await bus.js.add_consumer(subjects.RESULTS.name, config=cfg)
    got: list[m.ResultBatch] = []

    async def handler(batches: list[m.ResultBatch]) -> set[int]:
        got.extend(batches)
        return set()

    task = asyncio.ensure_future(
        bus.consume_batches(
            subjects.RESULTS, handler, durable="old-recorder", filter_subject=subjects.RESULTS.subjects[0]
        )
    )
    try:
        legacy = subjects.journaled_result_subject("n1", "chaos.result.u1")
        assert legacy == subjects.result_subject("n1", "u1")
        assert subjects.journaled_result_subject("n1", legacy) == legacy
        await bus.publish(subjects.RESULTS, legacy, batch("u1", "c1", "n1", "t"), msg_id="c1")
        await eventually(lambda: len(got) == 1, within=20)
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=5)
