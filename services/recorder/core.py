"""The recorder's pure core: how a decision or a result batch changes a stored object, and when
the `chaos-mesh/records` finalizer is added or removed. Objects are plain Kubernetes-shaped dicts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import msgspec

from chaosbus.common import messages as m
from chaosbus.common import subjects
from chaosbus.common.crd import kinds
from chaosbus.common.crd.meta import (
    CLEAN_FINALIZER_ANNOTATION,
    PAUSE_ANNOTATION,
    RECORDS_FINALIZER,
)
from chaosbus.common.crd.status import ChaosStatus, Condition
from chaosbus.common.errors import RetryLater
from chaosbus.recorder import status as st

Obj = dict[str, Any]
Mutation = Callable[[Obj], Obj | None]


def _meta(obj: Obj) -> dict[str, Any]:
    meta: dict[str, Any] = obj.get("metadata") or {}
    return meta


def read_status(obj: Obj) -> ChaosStatus | None:
    raw = obj.get("status")
    if not raw:
        return None
    try:
        return msgspec.convert(raw, ChaosStatus)
    except msgspec.ValidationError:
        return None  # a status we cannot read is rebuilt from the next decision


def one_shot(obj: Obj) -> bool:
    """Whether the experiment injects once and never recovers (pod-kill, container-kill)."""
    return kinds.one_shot(str(obj.get("kind")), obj.get("spec") or {})


def _write(obj: Obj, status: ChaosStatus, selection_error: str = "", failure: str | None = None) -> Obj | None:
    """`failure` (the scheduler's reason it cannot run the experiment) is kept from the stored
    status when None: results arriving later must not hide it.
    """
    meta = _meta(obj)
    paused = (meta.get("annotations") or {}).get(PAUSE_ANNOTATION) == "true"
    if failure is None:
        failure = st.failure_of(status)
    deleting = bool(meta.get("deletionTimestamp"))
    status = st.with_summary(
        st.with_conditions(status, paused=paused),
        paused=paused,
        deleting=deleting,
        one_shot=one_shot(obj),
        selection_failed=bool(selection_error),
    )
    status = st.bounded(status)
    if selection_error:
        status = msgspec.structs.replace(
            status,
            conditions=[
                Condition(type=c.type, status=c.status, reason="SelectionFailed", message=selection_error)
                if c.type == "Selected"
                else c
                for c in status.conditions
            ],
        )
    if failure:
        status = st.with_failure(status, failure, deleting=deleting)
    new_status = msgspec.to_builtins(status)
    if obj.get("status") == new_status:
        return None
    out = copy.copy(obj)
    out["status"] = new_status
    return out


def on_decision(obj: Obj, decision: m.ExperimentDecision) -> Obj | None:
    """The object with desiredPhase/records from the decision; None if unchanged or not ours."""
    if _meta(obj).get("uid") != decision.experiment_uid:
        return None
    status = st.apply_decision(read_status(obj), decision)
    return _write(obj, status, decision.selection_error if not decision.records else "", decision.failure)


class RecordsNotYetKnown(RetryLater):
    """Results arrived before the decision that creates their records (they travel on different
    streams): the recorder reads that decision from its stream, then folds them.
    """


def subject_mismatch(batch: m.ResultBatch, subject: str) -> str | None:
    """Why a result batch may not be believed as it arrived (None: it may). nats-server lets a
    node's injector publish only under `chaos.result.<its node>.`, so the subject names the node
    that sent it; the batch must claim that node and the subject's experiment.
    """
    node = subjects.result_node(subject)
    if node is None or node != subjects.token(batch.node):
        return f"a result of node {batch.node!r} arrived on {subject}"
    if subject != subjects.result_subject(batch.node, batch.experiment_uid):
        return f"a result for experiment {batch.experiment_uid!r} arrived on {subject}"
    return None


def foreign_results(
    batch: m.ResultBatch, decision: m.ExperimentDecision | None
) -> tuple[m.ResultBatch, list[m.TargetResult]]:
    """Split a batch into the results its node may give and those about another node's targets.
    A record's node is the one the scheduler sends its target's commands to (the decision's
    `RecordRef.node`); a record whose node is not known ("", a recover sent to every node) takes
    any node's results, as does every record when the decision is not known.
    """
    if decision is None or not decision.records:
        return batch, []
    owner = {(r.id, r.selector_key): r.node for r in decision.records}
    node = subjects.token(batch.node)
    kept: list[m.TargetResult] = []
    refused: list[m.TargetResult] = []
    for r in batch.results:
        want = owner.get((r.target_id, r.selector_key), "")
        (kept if not want or subjects.token(want) == node else refused).append(r)
    return (batch if not refused else msgspec.structs.replace(batch, results=kept)), refused


def _records_known(status: ChaosStatus | None, batches: list[m.ResultBatch]) -> bool:
    records = status.experiment.container_records if status else None
    known = {(r.id, r.selector_key) for r in records or []}
    return all((r.target_id, r.selector_key) in known for b in batches for r in b.results)


def on_results(
    obj: Obj, batch: m.ResultBatch, *, now: str, max_events: int, decision: m.ExperimentDecision | None = None
) -> Obj | None:
    """Fold a result batch into status, first applying `decision` (the latest for this experiment)
    if the records it creates are not stored yet. Raises RecordsNotYetKnown if they still are not.
    """
    return on_results_many(obj, [batch], now=now, max_events=max_events, decision=decision)


def on_results_many(
    obj: Obj, batches: list[m.ResultBatch], *, now: str, max_events: int, decision: m.ExperimentDecision | None = None
) -> Obj | None:
    """`on_results` for several batches of one experiment, in order, as one write: at 1,000
    targets the status is 250 KB, and ten nodes answering at once made ten rewrites of it.
    """
    uid = _meta(obj).get("uid")
    batches = [b for b in batches if b.experiment_uid == uid]
    if not batches:
        return None
    status = read_status(obj)
    if not _records_known(status, batches) and decision is not None:
        obj = on_decision(obj, decision) or obj
        status = read_status(obj)
    if not _records_known(status, batches):
        first = batches[0]
        raise RecordsNotYetKnown(f"{first.namespace}/{first.name}: no records yet for command {first.command_id}")
    assert status is not None
    for b in batches:
        status = st.apply_results(status, b, now=now, max_events=max_events)
    return _write(obj, status)


def finalizer_settled(meta: dict[str, Any]) -> bool:
    """From the metadata alone: nothing to do about our finalizer (a live object that has it, or a
    deleting one that no longer does). Lets a status write's echo skip decoding the whole object.
    """
    finalizers = meta.get("finalizers") or []
    return (RECORDS_FINALIZER in finalizers) != bool(meta.get("deletionTimestamp"))


class _StatusOnly(msgspec.Struct):
    status: msgspec.Raw | None = None


def admitted_with_finalizer(meta: dict[str, Any], raw: bytes) -> bool:
    """A live object that came with our finalizer and has no status yet: stored so by admission
    (local mode), the finalizer never added by a recorder write.
    """
    if RECORDS_FINALIZER not in (meta.get("finalizers") or []) or meta.get("deletionTimestamp"):
        return False
    try:
        status = msgspec.json.decode(raw, type=_StatusOnly).status
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return status is None or bytes(status) in (b"null", b"{}")


def finalizer_change(obj: Obj, latest: m.ExperimentDecision | None) -> Obj | None:
    """Add our finalizer to a live object; remove it from a deleting one once every target is
    recovered (as the scheduler's deleting decision confirms), or at once when forced.
    """
    meta = _meta(obj)
    finalizers = list(meta.get("finalizers") or [])
    deleting = bool(meta.get("deletionTimestamp"))
    if not deleting:
        if RECORDS_FINALIZER in finalizers:
            return None
        return _with_finalizers(obj, [*finalizers, RECORDS_FINALIZER])
    if RECORDS_FINALIZER not in finalizers:
        return None
    forced = meta.get("annotations", {}).get(CLEAN_FINALIZER_ANNOTATION) == "forced"
    status = read_status(obj)
    confirmed = latest is not None and latest.deleting and latest.experiment_uid == meta.get("uid")
    if forced or (confirmed and (status is None or st.all_recovered(status))):
        return _with_finalizers(obj, [f for f in finalizers if f != RECORDS_FINALIZER])
    return None


def _with_finalizers(obj: Obj, finalizers: list[str]) -> Obj:
    out = copy.copy(obj)
    out["metadata"] = {**_meta(obj), "finalizers": finalizers}
    return out


SUPPORTED = "Supported"
NOT_SUPPORTED = "NotSupported"


def not_supported(obj: Obj, why: str | None = None) -> Obj | None:
    """Mark an object chaosbus does not run (a kind it accepts but does not execute, an experiment
    for a remote cluster): condition Supported=False (reason NotSupported) saying why nothing is
    injected (default: `kinds.not_run`'s reason). None if already marked.
    """
    status = dict(obj.get("status") or {})
    message = why or kinds.not_run(str(obj.get("kind")), obj.get("spec") or {}) or ""
    condition = {"type": SUPPORTED, "status": "False", "reason": NOT_SUPPORTED, "message": message}
    others = [c for c in status.get("conditions") or [] if c.get("type") != SUPPORTED]
    new = {**status, "conditions": [*others, condition]}
    if new == obj.get("status"):
        return None
    out = copy.copy(obj)
    out["status"] = new
    return out
