"""The injector's core: one TargetAction in, one TargetResult out. Resolves the target's
containers through the runtime adapters (or takes handles the journal kept), runs the registered
fault's apply or recover, and turns every failure into a result that says why. Synchronous: the
app runs it in worker threads. Which faults leave state behind (and so are journaled as open until
recovered) is decided here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from chaosbus.common import messages as m
from chaosbus.common.faultspecs import MAX_STDOUT
from chaosbus.injector import faults, runtime
from chaosbus.injector.backends.kit import Backends, process_backends

Resolver = Callable[[str], runtime.ContainerHandle]


def lasting(tag: str, registry: dict[str, faults.Fault] | None = None) -> bool:
    """Whether a fault of this tag leaves state that must be recovered (journaled until it is):
    every fault but those whose module declares `one_shot = True`.
    """
    return not faults.one_shot(tag, registry)


def resolve_all(action: m.TargetAction, resolve: Resolver = runtime.resolve) -> list[runtime.ContainerHandle]:
    """Handles for the action's container ids.

    Raises:
        runtime.UnsupportedRuntime: an id this node cannot resolve.
    """
    return [resolve(cid) for cid in action.container_ids]


def run_action(
    cmd: m.NodeCommand,
    action: m.TargetAction,
    *,
    containers: list[runtime.ContainerHandle] | None = None,
    resolve: Resolver = runtime.resolve,
    registry: dict[str, faults.Fault] | None = None,
    op: str | None = None,
    original: Mapping[str, Any] | None = None,
    node: str = "",
    backends: Backends | None = None,
) -> m.TargetResult:
    """Run `op` (default: the action's own op) of the action's fault on its target; `original` is
    what the journal holds for it (`faults.original_state`), `node` the injector's node name."""
    tag = type(action.fault).__struct_config__.tag
    reg = faults.REGISTRY if registry is None else registry
    fault = reg.get(str(tag))
    if fault is None:
        return result(action, False, unsupported(action), retryable=False)
    if containers is None:
        try:
            containers = resolve_all(action, resolve)
        except runtime.UnsupportedRuntime as e:
            return result(action, False, str(e), retryable=e.retryable)
    ctx = faults.FaultContext(
        experiment_uid=cmd.experiment_uid,
        experiment_name=cmd.name,
        namespace=cmd.namespace,
        action=action,
        containers=containers,
        deadline=cmd.deadline,
        original=original or {},
        node=node,
        backends=backends or process_backends(),
    )
    try:
        fn = fault.apply if (op or action.op) == "apply" else fault.recover
        message = fn(ctx, action.fault)
    except faults.FaultError as e:
        return result(action, False, e.message, retryable=e.retryable)
    except Exception as e:  # a fault bug is reported on the target, never crashes the node
        return result(action, False, f"{type(e).__name__}: {e}", retryable=True)
    if isinstance(message, faults.CommandOutput):
        return msgspec.structs.replace(
            result(action, True, message.message), exit_code=message.exit_code, stdout=message.stdout[:MAX_STDOUT]
        )
    return result(action, True, message)


def unsupported(action: m.TargetAction) -> str:
    tag = type(action.fault).__struct_config__.tag
    what = f"{tag} ({action.fault.action})" if isinstance(action.fault, m.Shaping) else str(tag)
    return f"fault {what} is not supported by this injector yet"


def result(
    action: m.TargetAction, ok: bool, message: str, *, retryable: bool = True, op: str | None = None
) -> m.TargetResult:
    return m.TargetResult(
        target_id=action.target_id,
        selector_key=action.selector_key,
        op=op or action.op,  # type: ignore[arg-type]
        ok=ok,
        message=_cut(message, MAX_MESSAGE),
        retryable=retryable,
        at=time.time(),
    )


def shrunk(payload: bytes, max_bytes: int) -> bytes | None:
    """A result batch NATS refused as too large, with every stdout and message cut to 1 KiB (and
    saying so), if that fits in `max_bytes`; None when it does not, or is no result batch.
    """
    try:
        batch = msgspec.json.decode(payload, type=m.ResultBatch)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    results = [
        msgspec.structs.replace(r, stdout=_cut(r.stdout, 1024), message=_cut(r.message, 1024 - len(_SHRUNK)) + _SHRUNK)
        for r in batch.results
    ]
    smaller = msgspec.json.encode(msgspec.structs.replace(batch, results=results))
    return smaller if len(smaller) <= max_bytes else None


MAX_MESSAGE = 4096  # a result's message (errors included), in characters
_SHRUNK = " (output cut: the result was larger than NATS max_payload)"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


def batch(cmd: m.NodeCommand, results: list[m.TargetResult], node: str) -> m.ResultBatch:
    return m.ResultBatch(
        command_id=cmd.command_id,
        experiment_uid=cmd.experiment_uid,
        generation=cmd.generation,
        kind=cmd.kind,
        namespace=cmd.namespace,
        name=cmd.name,
        node=node,
        results=results,
    )
