"""Builders shared by the injector's unit tests."""

from __future__ import annotations

from chaosbus.common import messages as m
from chaosbus.injector import journal as jr
from chaosbus.injector.journal import Entry, Identity, NetnsRef, ProcRef


def entry(key: str = "u1|.|ns/p", state: str = jr.APPLYING, *, uid: str = "u1", deadline: float | None = 100.0,
          lasting: bool = True, generation: int = 1) -> Entry:
    action = m.TargetAction(target_id="ns/p", op="apply", pod_uid="pod-uid", container_ids=["process://42"],
                            fault=m.Partition(rules=[m.PartitionRule(chain="output", peers=["10.0.0.2"])]))
    return Entry(key=key, experiment_uid=uid, generation=generation, kind="NetworkChaos", namespace="ns", name="x",
                 action=action, identity=Identity(pod_uid="pod-uid", netns=(NetnsRef("/var/run/netns/a", 7),),
                                                  processes=(ProcRef("process://42", 42, 12.5),)),
                 original={"nft_table_absent": "chaosbus_abc"}, deadline=deadline, lasting=lasting, state=state,
                 command_id="c1")
