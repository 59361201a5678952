"""The direct triggers' requests and replies (chaos.trigger.*), without NATS: parse a request or
raise BadRequest naming the field; shape a stored object as a status reply. Pure.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from chaosbus.common import admission
from chaosbus.common import messages as m
from chaosbus.common import objects as o
from chaosbus.common.crd import CHAOS_KINDS, ORCHESTRATED, InvalidObject
from chaosbus.common.crd.errors import from_msgspec

Obj = dict[str, Any]
FINISHED = "Finished"
S = TypeVar("S", bound=m.Message)


class BadRequest(ValueError):
    def __init__(self, field: str, error: str) -> None:
        super().__init__(f"{field}: {error}" if field else error)
        self.field, self.error = field, error

    def reply(self) -> m.ErrorReply:
        return m.ErrorReply(error=str(self), field=self.field)


def _invalid(e: InvalidObject) -> BadRequest:
    """The first `field: message` names the field; the error text keeps every problem."""
    head = e.errors[0] if e.errors else str(e)
    field, sep, _ = head.partition(": ")
    return BadRequest(field if sep and " " not in field else "", "; ".join(e.errors))


def _json_object(data: bytes) -> Obj:
    try:
        doc = msgspec.json.decode(data) if data.strip() else {}
    except msgspec.DecodeError as e:
        raise BadRequest("", f"request is not JSON: {e}") from None
    except RecursionError:  # msgspec stops at Python's recursion limit; admission's own cap is lower
        raise BadRequest("", "request nested too deeply") from None
    if not isinstance(doc, dict):
        raise BadRequest("", f"request must be a JSON object, not {type(doc).__name__}")
    return doc


def served() -> tuple[str, ...]:
    """Experiments, and the kinds the scheduler orchestrates."""
    return (*CHAOS_KINDS, *ORCHESTRATED)


def parse_apply(data: bytes) -> Obj:
    """The experiment (its custom resource as JSON) as `chaosbus apply` would store it."""
    doc = _json_object(data)
    if doc.get("kind") not in served():
        raise BadRequest("kind", f"expected one of {', '.join(served())}, got {doc.get('kind')!r}")
    try:
        return admission.admit(doc)
    except InvalidObject as e:
        raise _invalid(e) from None


def parse_ref(data: bytes) -> m.TriggerRef:
    ref = _convert(_json_object(data), m.TriggerRef)
    kind = o.canonical_kind(ref.kind)
    if kind not in served():
        raise BadRequest("kind", f"expected one of {', '.join(served())}, got {ref.kind!r}")
    if not ref.name:
        raise BadRequest("name", "required")
    return msgspec.structs.replace(ref, kind=kind, namespace=ref.namespace or "default")


def parse_list(data: bytes) -> m.TriggerListRequest:
    return _convert(_json_object(data), m.TriggerListRequest)


def _convert(doc: Obj, kind: type[S]) -> S:
    try:
        return msgspec.convert(doc, kind)
    except msgspec.ValidationError as e:
        raise _invalid(from_msgspec(e)) from None


def not_found(ref: m.TriggerRef) -> BadRequest:
    return BadRequest("name", f'{ref.kind} "{ref.namespace}/{ref.name}" not found')


def status_of(obj: Obj) -> m.TriggerStatus:
    md = obj.get("metadata") or {}
    status = obj.get("status") or {}
    return m.TriggerStatus(
        kind=str(obj.get("kind")),
        namespace=str(md.get("namespace", "")),
        name=str(md.get("name", "")),
        uid=str(md.get("uid", "")),
        phase=str(status.get("phase", "")),
        status=status,
    )


def listing(objs: list[Obj], req: m.TriggerListRequest) -> m.TriggerList:
    """Chaos objects of the request's namespace (all when empty); finished ones only with `all`."""
    found = [status_of(ob) for ob in objs if ob.get("kind") in served()]
    return m.TriggerList(
        experiments=[
            s for s in found if (not req.namespace or s.namespace == req.namespace) and (req.all or s.phase != FINISHED)
        ]
    )
