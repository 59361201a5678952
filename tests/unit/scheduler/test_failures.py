"""One bad experiment never stops the scheduler: an exception while reconciling it fails that
experiment alone (its decision carries the reason, timers stop retrying it, its next event
does); an object that admission would have refused is reported Failed instead of silently
ignored; and the commands of a 1,000 + 1,000-pod partition on one node fit NATS (peer sets once).
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from chaosbus.common import commands
from chaosbus.common import messages as m
from chaosbus.common.crd.meta import RECORDS_FINALIZER
from chaosbus.scheduler.core import SchedulerCore

MAX_PAYLOAD = 1024 * 1024  # nats-server's default


def pod(i: int, app: str) -> m.TargetPod:
    return m.TargetPod(
        uid=f"u-{app}-{i}",
        namespace="default",
        name=f"{app}-{i}",
        labels={"app": app},
        node="n1",
        pod_ip=f"10.{1 if app == 'a' else 2}.{i // 250}.{i % 250 + 1}",
        phase="Running",
        containers=[m.ContainerRef(name="main", container_id=f"process://{app}{i}")],
    )


def partition(name: str, uid: str, **spec: Any) -> m.ObjectEvent:
    body = {
        "action": "partition",
        "mode": "all",
        "selector": {"labelSelectors": {"app": "a"}},
        "direction": "both",
        "target": {"mode": "all", "selector": {"labelSelectors": {"app": "b"}}},
        **spec,
    }
    obj = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "NetworkChaos",
        "spec": body,
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": uid,
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "finalizers": [RECORDS_FINALIZER],
        },
    }
    return m.ObjectEvent(
        type="MODIFIED",
        kind="NetworkChaos",
        namespace="default",
        name=name,
        uid=uid,
        generation=1,
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )


def core_with(n: int) -> SchedulerCore:
    core = SchedulerCore(rng=random.Random(1))
    for app in ("a", "b"):
        for i in range(n):
            p = pod(i, app)
            core.on_target(f"pod.default.{p.name}", p)
    return core


def test_an_exception_while_planning_fails_that_experiment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from chaosbus.common import faultplan  # after crd: importing faultplan first is a cycle

    core = core_with(2)

    def broken(*_: Any) -> m.Partition:
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(faultplan, "partition_for", broken)
    out = core.on_object(partition("bad", "u-bad"), 10.0)
    assert not out.commands
    [decision] = out.decisions
    assert decision.failure == "OverflowError: cannot convert float infinity to integer"
    assert out.errors == ["NetworkChaos/default/bad: OverflowError: cannot convert float infinity to integer"]
    monkeypatch.undo()
    good = core.on_object(partition("good", "u-good"), 10.0)
    assert good.commands and not good.errors and good.decisions[0].failure == ""
    # Timers never retry the failed one (no error per tick); the healthy one is reconciled as usual.
    later = core.tick(100.0)
    assert not later.errors and "u-bad" in core.experiments
    # Its next event retries it; now that it plans, it runs and the failure is cleared.
    again = core.on_object(partition("bad", "u-bad"), 101.0)
    assert again.commands and again.decisions and again.decisions[0].failure == ""


def test_an_object_admission_would_refuse_is_reported_failed_once() -> None:
    core = core_with(1)
    bad = partition("bad", "u-bad", duration="5000000h")
    out = core.on_object(bad, 1.0)
    [decision] = out.decisions
    assert "spec.duration: invalid duration '5000000h'" in decision.selection_error
    assert decision.desired_phase == "Stop" and not out.commands
    assert not core.on_object(bad, 2.0).decisions  # the same reason is not sent again


def test_a_1000_plus_1000_partition_on_one_node_fits_nats_with_every_peer() -> None:
    core = core_with(1000)
    out = core.on_object(partition("big", "u-big"), 1.0)
    [cmd] = out.commands
    assert len(cmd.actions) == 2000
    inline = len(msgspec.json.encode(cmd))
    parts = commands.parts(cmd, MAX_PAYLOAD - 8192)
    sizes = [len(msgspec.json.encode(p)) for p in parts]
    print(
        f"\n1,000+1,000 partition, one node: {inline / 1e6:.1f} MB with peers per target; "
        f"{len(parts)} part(s) of {sizes} bytes with peer sets once"
    )
    assert inline > 20 * MAX_PAYLOAD  # what crash-looped the scheduler
    assert all(s <= MAX_PAYLOAD - 8192 for s in sizes)
    assert sum(sizes) < inline / 20
    # The injector's view: every target back, each with its side's full peer list in both chains.
    expanded = [
        a
        for p in parts
        for a in commands.expand(msgspec.json.decode(msgspec.json.encode(p), type=m.NodeCommand)).actions
    ]
    assert expanded == cmd.actions
    a_ips = sorted(pod(i, "a").pod_ip for i in range(1000))
    b_ips = sorted(pod(i, "b").pod_ip for i in range(1000))
    for action in expanded:
        assert isinstance(action.fault, m.Partition)
        peers = b_ips if action.selector_key == "." else a_ips
        assert [r.chain for r in action.fault.rules] == ["output", "input"]
        assert all(r.peers == peers for r in action.fault.rules)


def test_split_parts_stay_below_a_small_max_payload_and_carry_only_their_peer_sets() -> None:
    core = core_with(300)
    [cmd] = core.on_object(partition("p", "u-p"), 1.0).commands
    parts = commands.parts(cmd, 32 * 1024)
    assert len(parts) > 2
    assert len({p.command_id for p in parts}) == len(parts) and parts[0].command_id == cmd.command_id
    assert all(len(msgspec.json.encode(p)) <= 32 * 1024 for p in parts)
    assert [a for p in parts for a in commands.expand(p).actions] == cmd.actions


def test_a_peer_set_the_command_does_not_carry_is_never_an_empty_list() -> None:
    core = core_with(2)
    [cmd] = core.on_object(partition("p", "u-p"), 1.0).commands
    compacted = commands.compact(cmd)
    with pytest.raises(commands.UnknownPeerSet):
        commands.expand(msgspec.structs.replace(compacted, peer_sets={}))


def test_an_object_the_watcher_could_not_carry_is_reported_failed_with_its_size() -> None:
    core = core_with(1)
    event = msgspec.structs.replace(partition("huge", "u-huge"), too_large=1_500_000)
    [decision] = core.on_object(event, 1.0).decisions
    assert "the object (1500000 bytes) is larger than NATS max_payload" in decision.selection_error


def test_a_task_command_that_is_no_list_is_refused_naming_the_field() -> None:
    from chaosbus.scheduler import wfspec

    spec = wfspec.decode(
        {
            "entry": "t",
            "templates": [{"name": "t", "templateType": "Task", "task": {"container": {"name": "c", "command": True}}}],
        }
    )
    with pytest.raises(wfspec.InvalidWorkflow, match=r"task.container.command: a Task needs a command"):
        wfspec.validate(spec, "default")


def test_a_malformed_workflow_object_is_forgotten_and_reported_never_raised() -> None:
    from chaosbus.scheduler.orchestrator import Orchestrator

    orch = Orchestrator()
    orch.start(1.0)
    obj = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "Workflow",
        "spec": {"entry": "e", "templates": [{"name": "e", "templateType": "Suspend", "deadline": "1s"}]},
        "metadata": {"name": {"not": "a name"}, "namespace": "default", "uid": "w"},
    }
    event = m.ObjectEvent(
        type="ADDED",
        kind="Workflow",
        namespace="default",
        name="w",
        uid="w",
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )
    out = orch.on_object(event, 2.0)
    assert out.errors == ["Workflow/default/w: TypeError: sequence item 1: expected str instance, dict found"]
    assert not out.writes and not orch.seen
    assert not orch.tick(3.0, everything=True).errors  # nothing of it is left to fail again
