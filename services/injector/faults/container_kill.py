"""container-kill: kill each container of the target, through its runtime when it has one.

`process://` containers (local mode's process pods) have no runtime: their process tree gets
SIGKILL through psutil. `containerd://`, `cri-o://` and `docker://` containers are killed by
their runtime (CRI StopContainer with timeout 0, Docker kill with KILL), so the runtime records
the exit and the kubelet restarts the container as after any crash, as in Chaos Mesh.

The filtering by `spec.container_names` belongs to the scheduler: it resolves names to container
IDs and sends only the chosen containers' IDs in the action, so this fault kills every container
in `ctx.containers`. One-shot: `recover` is a no-op.
"""

from __future__ import annotations

import time

from chaosbus.common.messages import FaultSpec
from chaosbus.injector import runtime
from chaosbus.injector.backends import procs
from chaosbus.injector.backends.runtimes import Runtimes
from chaosbus.injector.faults import FaultContext, FaultError, register
from chaosbus.injector.faults.pod_kill import kill_containers

# How long a runtime kill may take to show: Docker's kill returns once the signal is sent.
RUNTIME_KILL_WAIT_S = 5.0


def kill_through_runtimes(containers: list[runtime.ContainerHandle], runtimes: Runtimes) -> str:
    """Kill each live runtime container through its runtime (one of `runtimes`) and check its
    process died.

    Raises:
        FaultError: the runtime call failed, or the process survived (retryable).
    """
    live = [c for c in containers if c.alive]
    if not live:
        return "target gone: no running container, nothing to kill"
    gone = 0
    for c in live:
        try:
            if not runtime.kill(c, runtimes):
                gone += 1
        except runtime.UnsupportedRuntime as e:
            raise FaultError(f"kill {c.container_id}: {e}", retryable=e.retryable) from e
    survivors = _wait_dead([c.pid for c in live], RUNTIME_KILL_WAIT_S)
    if survivors:
        raise FaultError(
            f"pids {survivors} still alive {RUNTIME_KILL_WAIT_S:g}s after the runtime's kill", retryable=True
        )
    note = f" ({gone} already removed from the runtime)" if gone else ""
    return f"killed {len(live)} container(s) through the runtime{note}"


def _wait_dead(pids: list[int], within: float) -> list[int]:
    deadline = time.monotonic() + within
    while True:
        alive = [p for p in pids if procs.process_alive(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def is_runtime_container(handle: runtime.ContainerHandle) -> bool:
    return handle.container_id.partition("://")[0] in runtime.KNOWN_RUNTIMES


class ContainerKill:
    name = "container-kill"
    one_shot = True

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        by_runtime = [c for c in ctx.containers if is_runtime_container(c)]
        by_signal = [c for c in ctx.containers if not is_runtime_container(c)]
        messages = []
        if by_signal or not by_runtime:
            messages.append(kill_containers(by_signal))
        if by_runtime:
            messages.append(kill_through_runtimes(by_runtime, ctx.backends.runtimes))
        return "; ".join(messages)

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        return "container-kill is one-shot: nothing to recover"


register(ContainerKill())
