"""Typed KV buckets against a real nats-server: values go in and come out as the subject table's
Struct for their key, a value that does not decode is skipped (get, list, follow) without stopping
anything, a wrong type or an undeclared key is refused before it is sent, compare-and-set losses
(a stale delete's too) are WrongRevision, and a sealed key keeps its envelope for the reader that checks it.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers.signing import GUARD, OPERATOR, TRUST

from chaosbus.common import bus as busmod
from chaosbus.common import halt, subjects
from chaosbus.common import messages as m

pytestmark = pytest.mark.integration


def pod(name: str) -> m.TargetPod:
    return m.TargetPod(uid=f"uid-{name}", namespace="ns", name=name, node="n1")


async def test_values_round_trip_as_the_tables_type(bus: busmod.Bus) -> None:
    targets = await bus.bucket(subjects.TARGETS)
    await targets.put(subjects.target_pod_key("ns", "web"), pod("web"))
    await targets.put(subjects.target_node_key("n1"), m.TargetNode(name="n1", labels={"zone": "a"}))
    assert await targets.get(subjects.target_pod_key("ns", "web")) == pod("web")
    assert await targets.get(subjects.target_node_key("n1")) == m.TargetNode(name="n1", labels={"zone": "a"})
    assert await targets.get(subjects.target_pod_key("ns", "none")) is None
    listed = await targets.list("pod.>")
    assert [(s.key, s.value) for s in listed] == [("pod.ns.web", pod("web"))]


async def test_a_value_that_does_not_decode_is_skipped_not_fatal(bus: busmod.Bus) -> None:
    targets = await bus.bucket(subjects.TARGETS)
    raw = await bus.kv(subjects.TARGETS.name)  # what an older or broken writer could leave there
    follower = targets.follow("pod.>")
    assert await asyncio.wait_for(follower.__anext__(), 5) is None  # the empty snapshot
    await raw.put("pod.ns.bad", b'{"uid": 42}')
    await raw.put("pod.ns.worse", b"not json")
    await targets.put("pod.ns.good", pod("good"))
    after = await asyncio.wait_for(follower.__anext__(), 5)
    assert after is not None and (after.key, after.value) == ("pod.ns.good", pod("good"))
    await follower.aclose()  # type: ignore[attr-defined]
    assert await targets.get("pod.ns.bad") is None
    assert [s.key for s in await targets.list()] == ["pod.ns.good"]
    assert sorted(await targets.keys()) == ["pod.ns.bad", "pod.ns.good", "pod.ns.worse"]  # prunable all the same


async def test_a_wrong_type_or_an_undeclared_key_is_refused_before_sending(bus: busmod.Bus) -> None:
    targets = await bus.bucket(subjects.TARGETS)
    with pytest.raises(TypeError, match="TargetNode"):
        await targets.put(subjects.target_node_key("n1"), pod("web"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no key"):
        await targets.put("service.ns.web", pod("web"))
    scheduler = await bus.bucket(subjects.SCHEDULER)
    with pytest.raises(TypeError):
        await scheduler.put(subjects.LEADER_KEY, m.ExperimentMemory(uid="u", created_at=0.0))  # type: ignore[call-arg]
    assert await targets.keys() == []  # nothing reached the bucket


async def test_compare_and_set_losses_are_wrong_revision(bus: busmod.Bus) -> None:
    sched = await bus.bucket(subjects.SCHEDULER)
    lease = m.LeaderLease(holder="a", renewed_at=time.time(), ttl_s=3.0)
    first = await sched.create(subjects.LEADER_KEY, lease)
    with pytest.raises(busmod.WrongRevision):
        await sched.create(subjects.LEADER_KEY, lease)
    second = await sched.update(subjects.LEADER_KEY, lease, last=first)
    with pytest.raises(busmod.WrongRevision):
        await sched.update(subjects.LEADER_KEY, lease, last=first)
    with pytest.raises(busmod.WrongRevision):  # nats-py raised a bare BadRequestError here
        await sched.delete(subjects.LEADER_KEY, last=first)
    await sched.delete(subjects.LEADER_KEY, last=second)
    gone = await sched.entry_of(subjects.LEADER_KEY)
    assert gone is not None and gone.deleted and gone.value is None and gone.revision > second
    await sched.update(subjects.LEADER_KEY, lease, last=gone.revision)  # a lease taken over a deleted one
    assert await sched.get(subjects.LEADER_KEY) == lease


async def test_a_sealed_key_keeps_its_envelope_for_the_reader_that_checks_it(bus: busmod.Bus) -> None:
    state = await halt.set_halt(bus, halted=True, reason="drill", signer=OPERATOR, by="test")
    control = await bus.bucket(subjects.CONTROL)
    stored = await control.entry_of(subjects.HALT_KEY)
    assert stored is not None and stored.value is not None and stored.revision == state.revision
    assert (stored.value.halted, stored.value.reason) == (True, "drill")  # read inside, unchecked
    assert halt.judged(stored.data, TRUST, time.time()).reason == "drill"  # the envelope, checked
    # A resume signed with the guard's halt-only key decodes as a resume, but the checked read of
    # the same bytes keeps it halted: readers that act check `data`, not `value`.
    await halt.set_halt(bus, halted=False, signer=GUARD, by="guard")
    stored = await control.entry_of(subjects.HALT_KEY)
    assert stored is not None and stored.value is not None and not stored.value.halted
    assert halt.judged(stored.data, TRUST, time.time()).halted


async def test_a_key_outside_the_table_can_still_be_pruned(bus: busmod.Bus) -> None:
    """A newer watcher's projection kind, met by an older one's prune: read as nothing, deletable."""
    await (await bus.kv(subjects.TARGETS.name)).put("service.ns.web", b"{}")
    targets = await bus.bucket(subjects.TARGETS)
    assert await targets.get("service.ns.web") is None
    assert await targets.keys() == ["service.ns.web"]
    await targets.delete("service.ns.web")
    assert await targets.keys() == []
