"""The scheduler's side of the dead-man lease and of node-side recoveries: which experiments each
node is told to keep (and which opted out), and how a recovery the node did on its own (kill
switch, lease, vanished target) is taken into account.
"""

from __future__ import annotations

from unit.scheduler.test_core import (
    T0,
    UID,
    WEB0,
    WEB1,
    chaos,
    event,
    feed,
    ops,
    phases,
    results,
    running,
    started,
)

from chaosbus.common import messages as m
from chaosbus.scheduler.core import LEASE_ANNOTATION

FAILURE = {"action": "pod-failure"}


def leases(core: object, now: float = T0 + 1) -> dict[str, tuple[list[str], list[str]]]:
    return {lease.node: (lease.held, lease.exempt) for lease in core.leases(now, 15.0, "sched-1")}  # type: ignore[attr-defined]


def test_each_node_is_told_the_experiments_it_holds() -> None:
    core = running(chaos(spec=FAILURE), WEB0, WEB1)
    assert leases(core) == {"n1": ([UID], []), "n2": ([UID], [])}
    [lease] = core.leases(T0 + 1, 15.0, "sched-1", {"n2"})
    assert (lease.node, lease.holder, lease.ttl_s, lease.issued_at) == ("n2", "sched-1", 15.0, T0 + 1)


def test_the_opt_out_annotation_is_passed_on() -> None:
    core = running(chaos(spec=FAILURE, annotations={LEASE_ANNOTATION: "none"}), WEB0)
    assert leases(core)["n1"] == ([UID], [UID])


def test_nothing_is_held_once_the_experiment_stops_or_is_one_shot() -> None:
    core = running(chaos(spec={**FAILURE, "duration": "10s"}), WEB0)
    assert leases(core, T0 + 11) == {"n1": ([], [])}
    assert leases(running(chaos(spec={"action": "pod-kill"}), WEB0)) == {"n1": ([], [])}


def test_a_node_recovery_makes_the_target_not_injected_and_the_apply_is_sent_again() -> None:
    core = running(chaos(spec=FAILURE), WEB0)
    unsolicited = m.ResultBatch(
        command_id="node.n1.x",
        experiment_uid=UID,
        generation=1,
        kind="PodChaos",
        namespace="default",
        name="x",
        node="n1",
        results=[
            m.TargetResult(
                target_id="default/web-0", op="recover", ok=True, message="recovered: halted by kill switch (drill)"
            )
        ],
    )
    out = core.on_results(unsolicited, T0 + 2)
    assert phases(core) == {"default/web-0": "Not Injected"}
    assert ops(out) == [("n1", "apply", "default/web-0")]  # the node answers whether it may happen again
    refused = feed(core, results(out.commands, ok=False, retryable=False, message="refused: ended"), T0 + 3)
    assert refused.commands == [] and core.tick(T0 + 100).commands == []


def test_an_unsolicited_recover_does_not_disturb_an_op_in_flight() -> None:
    core, out = started(chaos(spec=FAILURE), WEB0)
    stray = m.ResultBatch(
        command_id="node.n1.y",
        experiment_uid=UID,
        generation=1,
        kind="PodChaos",
        namespace="default",
        name="x",
        node="n1",
        results=[m.TargetResult(target_id="default/web-0", op="recover", ok=True)],
    )
    core.on_results(stray, T0 + 0.1)
    feed(core, results(out.commands), T0 + 0.2)
    assert phases(core) == {"default/web-0": "Injected"}


def test_every_running_experiment_is_held() -> None:
    core = running(chaos(spec=FAILURE), WEB0)
    core.on_object(event(chaos(spec=FAILURE, uid="u2"), "ADDED"), T0 + 1)
    assert set(leases(core)["n1"][0]) == {UID, "u2"}
