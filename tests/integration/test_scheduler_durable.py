"""The scheduler as a real process on a real nats-server: `kill -9` mid-experiment and restart
(the expired fault's recover is sent within a second of coming back, nothing applied twice), two
schedulers with one leader (the standby takes over within 15 s when the leader is killed), and a
leader whose lease is overwritten stops at once. The test plays the watcher (object events,
target projection) and the injector (reads chaos.cmd.<node>, answers on chaos.result.<node>.<uid>): no
recorder runs, so no status is ever written and only the scheduler's own memory can resume it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers.signing import TRUST, write_keys
from nats.js import api

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, objects, subjects
from chaosbus.common.crd.meta import RECORDS_FINALIZER
from chaosbus.scheduler.election import Election, LostLeadership
from chaosbus.scheduler.leader import Leadership

pytestmark = pytest.mark.integration
NODE = "n1"
POD = m.TargetPod(
    uid="uid-web-0",
    namespace="default",
    name="web-0",
    labels={"app": "web"},
    node=NODE,
    pod_ip="10.9.0.1",
    phase="Running",
    containers=[m.ContainerRef(name="main", container_id="process://1", ready=True)],
)


class Proc:
    """One scheduler process; its log (JSON lines) in a file."""

    def __init__(self, url: str, instance: str, log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            env = {**os.environ, "CHAOSBUS_KEYS_DIR": str(write_keys(log.parent / "keys"))}
            self.p = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chaosbus.scheduler",
                    "--nats",
                    url,
                    "--metrics-port",
                    "0",
                    "--instance",
                    instance,
                ],
                stdout=out,
                stderr=out,
                start_new_session=True,
                env=env,
            )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def logged(self, event: str) -> dict[str, Any] | None:
        return next((x for x in self.lines() if x.get("event") == event), None)

    def kill9(self) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill9()


class Injector:
    """Stands in for the node's injector: takes commands, answers every action with success."""

    def __init__(self, bus: busmod.Bus) -> None:
        self.bus = bus
        self.received: list[tuple[float, m.NodeCommand]] = []
        self.psub: Any = None

    async def start(self) -> None:
        cfg = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, ack_wait=30.0)
        self.psub = await self.bus.js.pull_subscribe(
            subjects.command_subject(NODE), durable="injector-n1", stream=subjects.COMMANDS.name, config=cfg
        )

    async def pump(self, *, answer: bool = True) -> None:
        try:
            msgs = await self.psub.fetch(16, timeout=0.2)
        except TimeoutError:
            return
        for msg in msgs:
            opened = TRUST.open(msg.data, aud=msg.subject, role="scheduler", now=time.time())  # signed, or raises
            cmd = busmod.decode(opened.payload, m.NodeCommand)
            self.received.append((time.time(), cmd))
            await msg.ack()
            if answer:
                results = [
                    m.TargetResult(target_id=a.target_id, selector_key=a.selector_key, op=a.op, ok=True)
                    for a in cmd.actions
                ]
                batch = m.ResultBatch(
                    command_id=cmd.command_id,
                    experiment_uid=cmd.experiment_uid,
                    generation=cmd.generation,
                    kind=cmd.kind,
                    namespace=cmd.namespace,
                    name=cmd.name,
                    node=cmd.node,
                    results=results,
                )
                await self.bus.publish(
                    subjects.RESULTS,
                    subjects.result_subject(cmd.node, cmd.experiment_uid),
                    batch,
                    msg_id=cmd.command_id,
                )

    def ops(self, uid: str) -> list[str]:
        return [a.op for _, c in self.received if c.experiment_uid == uid for a in c.actions]

    async def until(self, check: Callable[[], Any], within: float, answer: bool = True) -> Any:
        deadline = time.monotonic() + within
        while not (value := check()):
            assert time.monotonic() < deadline, f"not within {within}s; commands: {self.received}"
            await self.pump(answer=answer)
        return value


@pytest.fixture
async def injector(bus: busmod.Bus) -> AsyncIterator[Injector]:
    await bus.kv(subjects.TARGETS.name)
    await (await bus.kv(subjects.TARGETS.name)).put(subjects.target_pod_key("default", "web-0"), busmod.encode(POD))
    inj = Injector(bus)
    await inj.start()
    yield inj


async def apply(bus: busmod.Bus, name: str, duration: str | None = None) -> str:
    uid = str(uuid.uuid4())
    spec: dict[str, Any] = {"action": "pod-failure", "mode": "all", "selector": {"labelSelectors": {"app": "web"}}}
    if duration:
        spec["duration"] = duration
    obj = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "PodChaos",
        "spec": spec,
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": uid,
            "generation": 1,
            "creationTimestamp": objects.now_rfc3339(),
            "finalizers": [RECORDS_FINALIZER],
        },
    }
    event = m.ObjectEvent(
        type="ADDED",
        kind="PodChaos",
        namespace="default",
        name=name,
        uid=uid,
        generation=1,
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )
    await bus.publish(subjects.OBJECTS, subjects.object_subject("PodChaos", "default", name), event, msg_id=uid)
    return uid


async def remembered(bus: busmod.Bus, uid: str) -> m.ExperimentMemory | None:
    kv = await bus.kv(subjects.SCHEDULER.name)
    try:
        entry = await kv.get(subjects.memory_key(uid))
    except Exception:
        return None
    return busmod.decode(entry.value, m.ExperimentMemory) if entry.value else None


async def wait_logged(proc: Proc, event: str, within: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while (line := proc.logged(event)) is None:
        assert proc.p.poll() is None, proc.log.read_text()
        assert time.monotonic() < deadline, f"{event!r} not logged: {proc.log.read_text()}"
        await asyncio.sleep(0.05)
    return line


def logged_at(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"]).timestamp()


async def test_kill9_mid_experiment_recovers_the_expired_fault_within_a_second_of_restart(
    nats_server: natsserver.EmbeddedServer, bus: busmod.Bus, injector: Injector, procs: list[Proc], tmp_path: Path
) -> None:
    procs.append(Proc(nats_server.url, "s1", tmp_path / "s1.log"))
    await wait_logged(procs[0], "scheduler ready")
    uid = await apply(bus, "timed", "3s")
    await injector.until(lambda: injector.ops(uid) == ["apply"], 10)
    [(_, applied)] = [x for x in injector.received if x[1].experiment_uid == uid]
    # the node's lease comes inside the apply, signed with it: not a message of its own ahead of it
    assert applied.lease is not None and applied.lease.node == NODE and applied.lease.held == [uid]

    async def injected() -> bool:
        mem = await remembered(bus, uid)
        return mem is not None and bool(mem.targets) and all(t.phase == "Injected" for t in mem.targets or [])

    deadline = time.monotonic() + 10
    while not await injected():
        assert time.monotonic() < deadline
        await injector.pump()
    mem = await remembered(bus, uid)
    assert mem is not None
    procs[0].kill9()
    killed_at = time.time()
    end = mem.created_at + 3
    await asyncio.sleep(max(0.0, end - time.time()) + 2.0)  # down past the deadline
    restart = Proc(nats_server.url, "s1", tmp_path / "s1-again.log")
    procs.append(restart)
    spawned = time.time()
    await injector.until(lambda: "recover" in injector.ops(uid), 20)
    recovered_at = next(t for t, c in injector.received if any(a.op == "recover" for a in c.actions))
    ready = logged_at(await wait_logged(restart, "scheduler ready"))
    print(
        f"\nkilled {killed_at - end:+.2f}s vs deadline; restarted {spawned - end:+.2f}s after it; recover "
        f"command {recovered_at - ready:.3f}s after the restarted scheduler was ready "
        f"({recovered_at - spawned:.2f}s after spawn, interpreter start included); ops {injector.ops(uid)}"
    )
    assert recovered_at - ready < 1.0
    assert injector.ops(uid) == ["apply", "recover"]  # nothing applied twice
    assert [c.lease for _, c in injector.received if c.experiment_uid == uid][1:] == [None]  # a recover holds nothing


async def test_standby_takes_over_within_15s_of_the_leader_dying(
    nats_server: natsserver.EmbeddedServer, bus: busmod.Bus, injector: Injector, procs: list[Proc], tmp_path: Path
) -> None:
    leader = Proc(nats_server.url, "s1", tmp_path / "s1.log")
    procs.append(leader)
    await wait_logged(leader, "scheduler ready")
    standby = Proc(nats_server.url, "s2", tmp_path / "s2.log")
    procs.append(standby)
    await wait_logged(standby, "standby: another scheduler holds the leader lease")
    first = await apply(bus, "first")
    await injector.until(lambda: injector.ops(first) == ["apply"], 10)
    await asyncio.sleep(1.0)
    for _ in range(5):
        await injector.pump()
    assert standby.logged("scheduler ready") is None and injector.ops(first) == ["apply"]
    leader.kill9()
    killed = time.time()
    second = await apply(bus, "second")
    await injector.until(lambda: injector.ops(second) == ["apply"], 25)
    applied = next(t for t, c in injector.received if c.experiment_uid == second)
    print(f"\nstandby took over and applied the next experiment {applied - killed:.2f}s after the leader's kill -9")
    assert applied - killed < 15.0
    assert injector.ops(first) == ["apply"]  # the first one is remembered as injected: not applied again


async def test_a_leader_whose_lease_is_overwritten_stops_acting(bus: busmod.Bus) -> None:
    kv = await bus.bucket(subjects.SCHEDULER)
    election = Election(kv, Leadership(holder="a", ttl_s=1.5))
    await election.acquire()
    assert election.lead.acting(time.time())
    keeping = asyncio.ensure_future(election.keep())
    await asyncio.sleep(0.2)
    await kv.put(subjects.LEADER_KEY, m.LeaderLease(holder="b", renewed_at=time.time(), ttl_s=1.5))
    overwritten = time.monotonic()
    with pytest.raises(LostLeadership):
        await asyncio.wait_for(keeping, timeout=5.0)
    print(
        f"\nleader stopped {time.monotonic() - overwritten:.2f}s after its lease was overwritten (renews every 0.5 s)"
    )
    assert not election.lead.acting(time.time())
    assert time.monotonic() - overwritten < 1.5
