"""The scheduler's memory of each experiment (per target: phase, in-flight op, retries, attempts;
selection outcome) and its durable form, `ExperimentMemory` in KV `scheduler`. Pure.

A restarted scheduler loads these before acting and prefers them over the object's status, which
the recorder writes later and so can lag behind what was already sent. Snapshots are compared with
the last one written, so a tick that changes nothing writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from chaosbus.common import messages as m
from chaosbus.common.crd import ChaosObject
from chaosbus.common.crd.status import NOT_INJECTED
from chaosbus.scheduler import plan


@dataclass
class TargetState:
    target: plan.Selected
    phase: str = NOT_INJECTED
    inflight: str | None = None
    inflight_at: float = 0.0
    retry_at: float = 0.0
    attempts: int = 0
    permanent_error: str = ""
    uncertain: bool = False  # an op's result never came: the kernel may or may not have it

    @property
    def key(self) -> tuple[str, str]:
        return self.target.record_id, self.target.selector_key


@dataclass
class Experiment:
    obj: ChaosObject
    created_at: float
    gone: bool = False
    targets: list[TargetState] | None = None
    selection_error: str = ""
    next_selection: float = 0.0
    last_decision: m.ExperimentDecision | None = None
    due_at: float | None = None  # when a timer next needs a reconcile (None: only an event does)
    failure: str = ""  # reconciling it raised: Failed, retried on its next object event, not by timers

    @property
    def uid(self) -> str:
        return self.obj.metadata.uid

    @property
    def deleting(self) -> bool:
        return self.gone or self.obj.metadata.deletion_timestamp is not None

    def duration(self) -> float | None:
        return self.obj.spec.duration_seconds()


def snapshot(exp: Experiment) -> m.ExperimentMemory:
    md = exp.obj.metadata
    targets = None if exp.targets is None else [_target_memory(t) for t in exp.targets]
    return m.ExperimentMemory(
        experiment_uid=md.uid,
        generation=md.generation,
        kind=exp.obj.kind,
        namespace=md.namespace,
        name=md.name,
        created_at=exp.created_at,
        targets=targets,
        selection_error=exp.selection_error,
        next_selection=exp.next_selection,
    )


def _target_memory(t: TargetState) -> m.TargetMemory:
    s = t.target
    return m.TargetMemory(
        target_id=s.record_id,
        selector_key=s.selector_key,
        pod=_slim(s.pod),
        container=s.container,
        phase=t.phase,
        inflight=t.inflight,  # type: ignore[arg-type]
        inflight_at=t.inflight_at,
        retry_at=t.retry_at,
        attempts=t.attempts,
        permanent_error=t.permanent_error,
        uncertain=t.uncertain,
    )


def _slim(pod: m.TargetPod) -> m.TargetPod:
    """What commands need of a pod that may have vanished: identity, node, address, containers."""
    return msgspec.structs.replace(pod, labels={}, annotations={})


def restore(mem: m.ExperimentMemory, obj: ChaosObject, pods: Mapping[str, m.TargetPod]) -> Experiment:
    """The experiment as it was remembered; a pod still known with the same uid replaces the stored
    copy (container ids and node may have been updated since).
    """
    exp = Experiment(
        obj=obj, created_at=mem.created_at, selection_error=mem.selection_error, next_selection=mem.next_selection
    )
    if mem.targets is not None:
        exp.targets = [_target_state(t, pods) for t in mem.targets]
    return exp


def _target_state(t: m.TargetMemory, pods: Mapping[str, m.TargetPod]) -> TargetState:
    live = pods.get(t.pod.key)
    pod = live if live is not None and live.uid == t.pod.uid else t.pod
    return TargetState(
        target=plan.Selected(t.target_id, t.selector_key, pod, t.container),
        phase=t.phase,
        inflight=t.inflight,
        inflight_at=t.inflight_at,
        retry_at=t.retry_at,
        attempts=t.attempts,
        permanent_error=t.permanent_error,
        uncertain=t.uncertain,
    )


def expire_stale_inflight(exp: Experiment, wanted_op: str, inflight_timeout_s: float, now: float) -> None:
    """After a restart, an op in flight that is no longer wanted (the experiment expired or was
    deleted while the scheduler was down) must not hold the wanted one back for the in-flight
    timeout: mark it timed out, so the next reconcile sends what is wanted now. An op that is still
    wanted keeps waiting: its result is on the durable results consumer.
    """
    for t in exp.targets or []:
        if t.inflight and t.inflight != wanted_op:
            t.inflight_at = min(t.inflight_at, now - inflight_timeout_s)
