"""container-kill (local mode): SIGKILL the process tree of each container of the target.

The filtering by `spec.container_names` belongs to the scheduler: it resolves names to container
IDs and sends only the chosen containers' IDs in the action, so this fault kills every container
in `ctx.containers`. One-shot: `recover` is a no-op.
"""

from __future__ import annotations

from chaosbus.common.messages import FaultSpec
from chaosbus.injector.faults import FaultContext, register
from chaosbus.injector.faults.pod_kill import kill_containers


class ContainerKill:
    name = "container-kill"

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        return kill_containers(ctx.containers)

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        return "container-kill is one-shot: nothing to recover"


register(ContainerKill())
