"""The injector's core: one TargetAction in, one TargetResult out. Resolves the target's
containers through the runtime adapters, runs the registered fault's apply or recover, and turns
every failure into a result that says why. Synchronous: the app runs it in worker threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from chaosbus.common import messages as m
from chaosbus.injector import faults, runtime

Resolver = Callable[[str], runtime.ContainerHandle]


def run_action(cmd: m.NodeCommand, action: m.TargetAction, *, resolve: Resolver = runtime.resolve,
               registry: dict[str, faults.Fault] | None = None) -> m.TargetResult:
    tag = type(action.fault).__struct_config__.tag
    reg = faults.REGISTRY if registry is None else registry
    fault = reg.get(str(tag))
    if fault is None:
        what = f"{tag} ({action.fault.action})" if isinstance(action.fault, m.Shaping) else str(tag)
        return _result(action, False, f"fault {what} is not supported by this injector yet", retryable=False)
    try:
        containers = [resolve(cid) for cid in action.container_ids]
    except runtime.UnsupportedRuntime as e:
        return _result(action, False, str(e), retryable=False)
    ctx = faults.FaultContext(experiment_uid=cmd.experiment_uid, experiment_name=cmd.name,
                              namespace=cmd.namespace, action=action, containers=containers)
    try:
        op = fault.apply if action.op == "apply" else fault.recover
        message = op(ctx, action.fault)
    except faults.FaultError as e:
        return _result(action, False, e.message, retryable=e.retryable)
    except Exception as e:  # a fault bug is reported on the target, never crashes the node
        return _result(action, False, f"{type(e).__name__}: {e}", retryable=True)
    return _result(action, True, message)


def _result(action: m.TargetAction, ok: bool, message: str, *, retryable: bool = True) -> m.TargetResult:
    return m.TargetResult(target_id=action.target_id, selector_key=action.selector_key, op=action.op, ok=ok,
                          message=message, retryable=retryable, at=time.time())


def batch(cmd: m.NodeCommand, results: list[m.TargetResult], node: str) -> m.ResultBatch:
    return m.ResultBatch(command_id=cmd.command_id, experiment_uid=cmd.experiment_uid,
                         generation=cmd.generation, kind=cmd.kind, namespace=cmd.namespace, name=cmd.name,
                         node=node, results=results)
