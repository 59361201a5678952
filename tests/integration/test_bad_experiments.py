"""A real scheduler process on a real nats-server, fed objects that never went through admission
(the test plays the watcher and the node's injector): an invalid object is reported Failed with
its field, a 1,000 + 1,000-pod partition on one node reaches the node in full (every target, every
peer, each message below max_payload), and an experiment NATS cannot carry at all fails alone
while the scheduler keeps serving the others.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers.signing import TRUST, write_keys
from nats.js import api

from chaosbus.common import bus as busmod
from chaosbus.common import commands, natsserver, objects, subjects
from chaosbus.common import messages as m
from chaosbus.common.crd.meta import RECORDS_FINALIZER

pytestmark = pytest.mark.integration
NODE = "n1"
SMALL_PAYLOAD = 8 * 1024


def pod(i: int, app: str) -> m.TargetPod:
    return m.TargetPod(
        uid=f"u-{app}-{i}",
        namespace="default",
        name=f"{app}-{i}",
        labels={"app": app},
        node=NODE,
        pod_ip=f"10.{1 if app == 'a' else 2}.{i // 250}.{i % 250 + 1}",
        phase="Running",
        containers=[m.ContainerRef(name="main", container_id=f"process://{app}{i}", ready=True)],
    )


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[str]:
    """nats-server with an 8 KiB max_payload (the test's own config file)."""
    conf = tmp_path / "small.conf"
    conf.write_text(
        f'listen: "127.0.0.1:-1"\nmax_payload: {SMALL_PAYLOAD}\n'
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\nports_file_dir: "{tmp_path}"\n'
    )
    proc = subprocess.Popen(
        [natsserver.binary(), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not (ports := list(tmp_path.glob(f"*_{proc.pid}.ports"))):
            assert proc.poll() is None and time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.02)
        time.sleep(0.05)
        yield str(msgspec.json.decode(ports[0].read_bytes())["nats"][0])
    finally:
        proc.terminate()
        proc.wait(10)


class World:
    """The watcher's and the injector's side of the scheduler, over the bus."""

    def __init__(self, bus: busmod.Bus, url: str, log: Path) -> None:
        self.bus, self.url, self.log = bus, url, log
        self.commands: list[tuple[int, m.NodeCommand]] = []
        self.decisions: dict[str, m.ExperimentDecision] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, pods: list[m.TargetPod]) -> None:
        kv = await self.bus.kv(subjects.TARGETS.name)
        for i in range(0, len(pods), 200):
            await asyncio.gather(
                *(kv.put(subjects.target_pod_key(p.namespace, p.name), busmod.encode(p)) for p in pods[i : i + 200])
            )
        cfg = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, ack_wait=30.0)
        self.psub = await self.bus.js.pull_subscribe(
            subjects.command_subject(NODE), durable="injector-n1", stream=subjects.COMMANDS.name, config=cfg
        )

        async def on_decision(msg: Any) -> None:
            d = busmod.decode(msg.data, m.ExperimentDecision)
            self.decisions[d.experiment_uid] = d

        await self.bus.js.subscribe("chaos.phase.*", cb=on_decision, ordered_consumer=True)
        self.spawn()

    def spawn(self) -> None:
        env = {**os.environ, "CHAOSBUS_KEYS_DIR": str(write_keys(self.log.parent / "keys"))}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chaosbus.scheduler",
                    "--nats",
                    self.url,
                    "--metrics-port",
                    "0",
                    "--instance",
                    "s1",
                ],
                stdout=out,
                stderr=out,
                start_new_session=True,
                env=env,
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def apply(self, name: str, spec: dict[str, Any], kind: str = "NetworkChaos") -> str:
        uid = str(uuid.uuid4())
        obj = {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": kind,
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
            kind=kind,
            namespace="default",
            name=name,
            uid=uid,
            generation=1,
            object=msgspec.Raw(msgspec.json.encode(obj)),
        )
        await self.bus.publish(subjects.OBJECTS, subjects.object_subject(kind, "default", name), event, msg_id=uid)
        return uid

    async def pump(self) -> None:
        try:
            msgs = await self.psub.fetch(64, timeout=0.2)
        except TimeoutError:
            return
        for msg in msgs:
            opened = TRUST.open(msg.data, aud=msg.subject, role="scheduler", now=time.time())  # signed, or raises
            self.commands.append((len(msg.data), busmod.decode(opened.payload, m.NodeCommand)))
            await msg.ack()

    def actions(self, uid: str) -> list[m.TargetAction]:
        return [a for _, c in self.commands if c.experiment_uid == uid for a in commands.expand(c).actions]

    async def until(self, what: str, check: Any, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while not check():
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{what} not within {within}s; log: {self.log.read_text()[-3000:]}"
            await self.pump()
            await asyncio.sleep(0.05)


@pytest.fixture
async def world(bus: busmod.Bus, nats_server: natsserver.EmbeddedServer, tmp_path: Path) -> AsyncIterator[World]:
    w = World(bus, nats_server.url, tmp_path / "scheduler.log")
    yield w
    w.stop()


@pytest.fixture
async def small_world(small_server: str, tmp_path: Path) -> AsyncIterator[World]:
    b = await busmod.connect(small_server, "test")
    await b.ensure()
    w = World(b, small_server, tmp_path / "scheduler.log")
    try:
        yield w
    finally:
        w.stop()
        await b.close()


PARTITION = {
    "action": "partition",
    "mode": "all",
    "selector": {"labelSelectors": {"app": "a"}},
    "direction": "both",
    "target": {"mode": "all", "selector": {"labelSelectors": {"app": "b"}}},
}
GOOD = {"action": "pod-failure", "mode": "all", "selector": {"labelSelectors": {"app": "c"}}}


async def test_invalid_objects_fail_alone_and_a_1000_plus_1000_partition_arrives_in_full(world: World) -> None:
    pods = [pod(i, app) for app in ("a", "b") for i in range(1000)] + [pod(0, "c")]
    await world.start(pods)
    bad = await world.apply(
        "bad-latency",
        {
            "action": "delay",
            "mode": "all",
            "delay": {"latency": "9" * 400 + "ms"},
            "selector": {"labelSelectors": {"app": "c"}},
        },
    )
    big = await world.apply("big", PARTITION)
    good = await world.apply("good", GOOD, kind="PodChaos")
    await world.until("the bad object's failure", lambda: bad in world.decisions)
    assert "spec.delay.latency: invalid duration" in world.decisions[bad].selection_error
    await world.until("every partition target", lambda: len(world.actions(big)) == 2000)
    await world.until("the good experiment's command", lambda: world.actions(good))
    sizes = [size for size, c in world.commands if c.experiment_uid == big]
    assert max(sizes) <= 1024 * 1024
    a_ips = sorted(pod(i, "a").pod_ip for i in range(1000))
    b_ips = sorted(pod(i, "b").pod_ip for i in range(1000))
    for action in world.actions(big):
        assert isinstance(action.fault, m.Partition)
        assert [r.chain for r in action.fault.rules] == ["output", "input"]
        assert all(r.peers == (b_ips if action.selector_key == "." else a_ips) for r in action.fault.rules)
    print(f"\n1,000+1,000 partition: {len(sizes)} command(s) of {sizes} bytes")
    assert world.decisions.get(big) is None or not world.decisions[big].failure
    await asyncio.sleep(1.0)
    assert world.proc is not None and world.proc.poll() is None
    assert "Traceback" not in world.log.read_text()


async def test_an_experiment_nats_cannot_carry_fails_and_the_scheduler_goes_on(small_world: World) -> None:
    pods = [pod(i, app) for app in ("a", "b") for i in range(1000)] + [pod(0, "c")]
    await small_world.start(pods)
    big = await small_world.apply("big", PARTITION)
    await small_world.until(
        "the big experiment's failure", lambda: big in small_world.decisions and small_world.decisions[big].failure
    )
    assert f"larger than NATS max_payload ({SMALL_PAYLOAD} bytes)" in small_world.decisions[big].failure
    good = await small_world.apply("good", GOOD, kind="PodChaos")
    await small_world.until("the good experiment's command", lambda: small_world.actions(good))
    assert not small_world.actions(big)
    assert small_world.proc is not None and small_world.proc.poll() is None


async def test_an_object_event_over_max_payload_reaches_the_scheduler_as_failed(small_world: World) -> None:
    """The watcher cannot carry an object NATS refuses: it sends its metadata and size instead, and
    the scheduler marks the experiment Failed saying so (it used to be an exception in the watcher)."""
    from chaosbus.watcher.app import emit
    from chaosbus.watcher.core import Outputs
    from chaosbus.watcher.metrics import WatcherMetrics

    await small_world.start([pod(0, "c")])
    uid = str(uuid.uuid4())
    obj = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "PodChaos",
        "spec": GOOD,
        "metadata": {
            "name": "huge",
            "namespace": "default",
            "uid": uid,
            "generation": 1,
            "annotations": {"note": "x" * SMALL_PAYLOAD},
            "creationTimestamp": objects.now_rfc3339(),
            "finalizers": [RECORDS_FINALIZER],
        },
    }
    event = m.ObjectEvent(
        type="ADDED",
        kind="PodChaos",
        namespace="default",
        name="huge",
        uid=uid,
        generation=1,
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )
    metrics = WatcherMetrics()
    await emit(
        small_world.bus,
        await small_world.bus.bucket(subjects.TARGETS),
        Outputs(events=[(subjects.object_subject("PodChaos", "default", "huge"), event, uid)]),
        metrics,
    )
    assert metrics.errors.labels("object_too_large")._value.get() == 1
    await small_world.until("the huge object's failure", lambda: uid in small_world.decisions)
    assert "larger than NATS max_payload" in small_world.decisions[uid].selection_error
    assert not small_world.actions(uid)
