"""A burst of experiments through a real scheduler process on a real nats-server: each experiment's
memory and decision are stored before its command leaves (write-ahead, and the recorder reads
records from the decision), different experiments' writes are in flight together instead of one
experiment's round trips after another's, and every result is folded and acked.

The test plays the watcher (object events, target projection) and the injectors (it answers each
command). One core NATS connection sees the scheduler's memory writes (`$KV.scheduler.>`), its
decisions and its commands in the order nats-server received them: the scheduler sends a
command only after its memory's and decision's acks, so the command must come after both.

The same process also rides out a lame-duck restart of nats-server with all its readers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats.js.errors
import pytest
from helpers.signing import write_keys
from nats.aio.msg import Msg

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, objects, signing, subjects
from chaosbus.common.crd.meta import RECORDS_FINALIZER

pytestmark = pytest.mark.integration
EXPERIMENTS = 30
NODES = 3
MEMORY_PREFIX = f"$KV.{subjects.SCHEDULER.name}.experiment."


def pod(i: int) -> m.TargetPod:
    return m.TargetPod(
        uid=f"uid-web-{i}",
        namespace="default",
        name=f"web-{i}",
        labels={"app": f"web-{i}"},
        node=f"n{i % NODES}",
        pod_ip=f"10.9.0.{i + 1}",
        phase="Running",
        containers=[m.ContainerRef(name="main", container_id=f"process://{i + 1}", ready=True)],
    )


def event(i: int) -> m.ObjectEvent:
    uid, name = str(uuid.uuid4()), f"burst-{i}"
    obj = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "PodChaos",
        "spec": {"action": "pod-failure", "mode": "all", "selector": {"labelSelectors": {"app": f"web-{i}"}}},
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": uid,
            "generation": 1,
            "creationTimestamp": objects.now_rfc3339(),
            "finalizers": [RECORDS_FINALIZER],
        },
    }
    return m.ObjectEvent(
        type="ADDED",
        kind="PodChaos",
        namespace="default",
        name=name,
        uid=uid,
        generation=1,
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )


class Seen:
    """What nats-server passed on, in its order: (what, experiment uid, message). One subscription
    for all (nats-py hands each subscription's messages to its own task, so several would not
    keep the order across them).
    """

    def __init__(self) -> None:
        self.order: list[tuple[str, str, Any]] = []

    async def on_message(self, msg: Msg) -> None:
        if msg.subject.startswith(MEMORY_PREFIX) and msg.data:
            mem = busmod.decode(msg.data, m.ExperimentMemory)
            self.order.append(("memory", mem.experiment_uid, mem))
        elif msg.subject.startswith("chaos.phase."):
            d = busmod.decode(msg.data, m.ExperimentDecision)
            self.order.append(("decision", d.experiment_uid, d))
        elif msg.subject.startswith("chaos.cmd."):
            c = busmod.decode(signing.peek(msg.data), m.NodeCommand)
            self.order.append(("command", c.experiment_uid, c))

    def commands(self) -> list[m.NodeCommand]:
        return [c for what, _, c in self.order if what == "command"]


def start_scheduler(url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    """A scheduler process on `url`, logging to tmp_path/scheduler.log."""
    env = {**os.environ, "CHAOSBUS_KEYS_DIR": str(write_keys(tmp_path / "keys"))}
    with open(tmp_path / "scheduler.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "chaosbus.scheduler", "--nats", url, "--metrics-port", "0"],
            stdout=out,
            stderr=out,
            start_new_session=True,
            env=env,
        )


@pytest.fixture
def scheduler(nats_server: natsserver.EmbeddedServer, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_scheduler(nats_server.url, tmp_path)
    yield proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
async def seen(bus: busmod.Bus) -> AsyncIterator[Seen]:
    s = Seen()
    await bus.nc.subscribe(">", cb=s.on_message)
    yield s


async def answer(bus: busmod.Bus, cmd: m.NodeCommand) -> None:
    results = [
        m.TargetResult(target_id=a.target_id, selector_key=a.selector_key, op=a.op, ok=True) for a in cmd.actions
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
    await bus.publish(
        subjects.RESULTS, subjects.result_subject(cmd.node, cmd.experiment_uid), batch, msg_id=cmd.command_id
    )


async def test_a_burst_is_written_ahead_per_experiment_and_in_flight_together(
    bus: busmod.Bus, seen: Seen, scheduler: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    await bus.ensure()
    targets = await bus.kv(subjects.TARGETS.name)
    for i in range(EXPERIMENTS):
        await targets.put(subjects.target_pod_key("default", f"web-{i}"), busmod.encode(pod(i)))
    events = [event(i) for i in range(EXPERIMENTS)]
    await asyncio.gather(
        *(
            bus.publish(subjects.OBJECTS, subjects.object_subject(e.kind, e.namespace, e.name), e, msg_id=e.uid)
            for e in events
        )
    )
    deadline = time.monotonic() + 60
    while len({c.experiment_uid for c in seen.commands()}) < EXPERIMENTS:
        assert scheduler.poll() is None, (tmp_path / "scheduler.log").read_text()
        assert time.monotonic() < deadline, f"{len(seen.commands())} commands within 60 s"
        await asyncio.sleep(0.05)

    order = list(seen.order)
    first_command = next(i for i, (what, _, _) in enumerate(order) if what == "command")
    for e in events:
        cmd_at = next(i for i, (what, uid, _) in enumerate(order) if what == "command" and uid == e.uid)
        remembered = [
            i
            for i, (what, uid, mem) in enumerate(order[:cmd_at])
            if what == "memory" and uid == e.uid and all(t.inflight == "apply" for t in mem.targets or [None])
        ]
        decided = [i for i, (what, uid, _) in enumerate(order[:cmd_at]) if what == "decision" and uid == e.uid]
        assert remembered, f"{e.name}: command sent before its memory said apply in flight"
        assert decided, f"{e.name}: command sent before its decision"
    # In flight together: more than one experiment's memory was stored before the first command
    # left (one experiment at a time would send its command right after its own two writes).
    early = {uid for what, uid, _ in order[:first_command] if what == "memory"}
    assert len(early) > 1, order[: first_command + 1]

    # Every result folded and acked: each memory ends Injected, nothing left unacked.
    for c in seen.commands():
        await answer(bus, c)
    want = {e.uid for e in events}
    while True:
        last: dict[str, m.ExperimentMemory] = {uid: mem for what, uid, mem in seen.order if what == "memory"}
        injected = {u for u in want if all(t.phase == "Injected" for t in last[u].targets or [])}
        try:
            info = await bus.js.consumer_info(subjects.RESULTS.name, "scheduler-results")
        except nats.js.errors.NotFoundError:  # the scheduler's results loop has not created it yet
            info = None
        if injected == want and info is not None and info.num_ack_pending == 0 and info.num_pending == 0:
            break
        assert time.monotonic() < deadline, f"{len(injected)} of {EXPERIMENTS} injected; {info}"
        await asyncio.sleep(0.05)
    assert [a.op for c in seen.commands() for a in c.actions] == ["apply"] * EXPERIMENTS  # nothing sent twice


async def test_the_scheduler_acts_on_objects_targets_and_results_after_a_lame_duck_nats_restart(
    tmp_path: Path,
) -> None:
    """nats-server stopped the way a NATS pod is (lame duck mode: JetStream shut down first, the
    clients let go after a grace period) and started again on its store: the same scheduler
    process, never restarted, still follows objects and targets and folds results."""
    conf = tmp_path / "lame-duck.conf"
    conf.write_text('lame_duck_duration: "30s"\nlame_duck_grace_period: "2s"\n')  # 30 s: the minimum
    server = natsserver.start(tmp_path / "nats", config_file=conf)
    bus = await busmod.connect(server.url, "test")
    seen = Seen()
    log = tmp_path / "scheduler.log"
    proc = start_scheduler(server.url, tmp_path)
    deadline = time.monotonic() + 90

    async def until(cond: Any, what: str) -> None:
        while not cond():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.05)

    async def retrying(action: Any) -> None:
        while True:  # JetStream may not answer for a moment after the restart
            try:
                await action()
                return
            except (nats.errors.Error, TimeoutError):
                assert time.monotonic() < deadline, "NATS did not come back"
                await asyncio.sleep(0.1)

    def commanded(e: m.ObjectEvent) -> bool:
        return any(c.experiment_uid == e.uid for c in seen.commands())

    try:
        await bus.ensure()
        await bus.nc.subscribe(">", cb=seen.on_message)
        targets = await bus.kv(subjects.TARGETS.name)
        before, after = event(0), event(1)
        await targets.put(subjects.target_pod_key("default", "web-0"), busmod.encode(pod(0)))
        await bus.publish(
            subjects.OBJECTS, subjects.object_subject("PodChaos", "default", before.name), before, msg_id=before.uid
        )
        await until(lambda: commanded(before), "no command before the restart")

        server.process.send_signal(signal.SIGUSR2)
        await asyncio.to_thread(server.process.wait, 60)
        server = natsserver.start(tmp_path / "nats", port=server.port, config_file=conf)

        await retrying(lambda: targets.put(subjects.target_pod_key("default", "web-1"), busmod.encode(pod(1))))
        await retrying(
            lambda: bus.publish(
                subjects.OBJECTS, subjects.object_subject("PodChaos", "default", after.name), after, msg_id=after.uid
            )
        )
        await until(lambda: commanded(after), "no command for an object published after the restart")
        for c in seen.commands():
            await retrying(lambda c=c: answer(bus, c))

        def injected() -> bool:
            last = {uid: mem for what, uid, mem in seen.order if what == "memory"}
            return all(
                u in last and all(t.phase == "Injected" for t in last[u].targets or []) for u in (before.uid, after.uid)
            )

        await until(injected, "results after the restart not folded")
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with contextlib.suppress(Exception):
            await bus.close()
        server.stop()
