"""A 1,000 + 1,000-pod partition on one node, on the real kernel: the scheduler core plans it for
1,000 selected and 1,000 target pods (four of them real process pods in their own netns, the
rest addresses only: a thousand real netns would cost minutes), the command goes through what
NATS carries (peer sets once, split below max_payload, encoded and decoded), the injector's
expansion gives every target its side's full peer list, and the real partition fault applied in
the real pods cuts exactly the links across the two sides.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import msgspec
import pytest

from chaosbus.common import commands
from chaosbus.common import messages as m
from chaosbus.common.crd.meta import RECORDS_FINALIZER
from chaosbus.injector import faults
from chaosbus.scheduler.core import SchedulerCore

from .conftest import Lab
from .test_kernel_faults import ctx_for

pytestmark = pytest.mark.privileged
SIDE = 1000


def target_pod(name: str, app: str, ip: str) -> m.TargetPod:
    return m.TargetPod(
        uid=f"uid-{name}",
        namespace="default",
        name=name,
        labels={"app": app},
        node="n1",
        pod_ip=ip,
        phase="Running",
        containers=[m.ContainerRef(name="main", container_id=f"process://{name}")],
    )


@pytest.fixture
def applied(lab: Lab) -> Iterator[list[tuple[int, m.TargetAction]]]:
    """The real pods' actions, as the injector gets them, applied; recovered at the end."""
    core = SchedulerCore(rng=random.Random(1))
    real = {0: "a", 1: "a", 2: "b", 3: "b"}
    for i, app in real.items():
        core.on_target(f"pod.default.real-{i}", target_pod(f"real-{i}", app, lab.pods[i].ip))
    for app, net in (("a", 21), ("b", 22)):
        for i in range(SIDE - 2):
            ip = f"10.{net}.{i // 250}.{i % 250 + 1}"
            core.on_target(f"pod.default.{app}-{i}", target_pod(f"{app}-{i}", app, ip))
    spec = {
        "action": "partition",
        "mode": "all",
        "selector": {"labelSelectors": {"app": "a"}},
        "direction": "both",
        "target": {"mode": "all", "selector": {"labelSelectors": {"app": "b"}}},
    }
    obj = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "NetworkChaos",
        "spec": spec,
        "metadata": {
            "name": "big",
            "namespace": "default",
            "uid": "big-partition",
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "finalizers": [RECORDS_FINALIZER],
        },
    }
    event = m.ObjectEvent(
        type="ADDED",
        kind="NetworkChaos",
        namespace="default",
        name="big",
        uid="big-partition",
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )
    [cmd] = core.on_object(event, 1.0).commands
    wire = [msgspec.json.encode(p) for p in commands.parts(cmd, 1024 * 1024 - 8192)]
    assert all(len(w) <= 1024 * 1024 - 8192 for w in wire)
    actions = [a for w in wire for a in commands.expand(msgspec.json.decode(w, type=m.NodeCommand)).actions]
    assert len(actions) == 2 * SIDE
    by_pod = {a.pod_name: a for a in actions}
    fault = faults.get("partition")
    mine = [(i, by_pod[f"real-{i}"]) for i in real]
    for i, action in mine:
        assert all(len(r.peers) == SIDE for r in action.fault.rules)  # type: ignore[union-attr]
        fault.apply(ctx_for("big-partition", [lab.pods[i].server.pid], action.fault, action.selector_key), action.fault)
    yield mine
    for i, action in mine:
        fault.recover(
            ctx_for("big-partition", [lab.pods[i].server.pid], action.fault, action.selector_key), action.fault
        )


def test_a_1000_plus_1000_partition_cuts_exactly_the_links_across_the_sides(
    lab: Lab, applied: list[tuple[int, m.TargetAction]]
) -> None:
    across = {(s, t) for s in (0, 1) for t in (2, 3)} | {(t, s) for s in (0, 1) for t in (2, 3)}
    expected = {link for link in lab.all_links() if (link[0], link[1]) not in across}
    assert lab.reachable() == expected
