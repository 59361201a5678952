"""pod-kill (local mode): SIGKILL the process tree of every container of the target pod.

One-shot, as in Chaos Mesh: there is nothing to undo, so `recover` is a no-op. Process pods have
no kubelet to honour a grace period, so `grace_period` is ignored and the kill is immediate.
"""

from __future__ import annotations

from chaosbus.common.messages import FaultSpec
from chaosbus.injector.backends import procs
from chaosbus.injector.faults import FaultContext, FaultError, register
from chaosbus.injector.runtime import ContainerHandle


def kill_containers(containers: list[ContainerHandle]) -> str:
    """SIGKILL each live container's process tree and check it died; the human message.

    Raises:
        FaultError: a process survived (retryable) or a pid must never be killed (not retryable).
    """
    live = [c for c in containers if c.alive]
    if not live:
        return "target gone: no live container process, nothing to kill"
    try:
        killed = sum(procs.kill_tree(c.pid) for c in live)
    except ValueError as e:
        raise FaultError(str(e), retryable=False) from e
    survivors = [c.pid for c in live if procs.process_alive(c.pid)]
    if survivors:
        raise FaultError(f"pids {survivors} survived SIGKILL", retryable=True)
    return f"killed {killed} processes in {len(live)} container(s)"


class PodKill:
    name = "pod-kill"
    one_shot = True

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        return kill_containers(ctx.containers)

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        return "pod-kill is one-shot: nothing to recover"


register(PodKill())
