"""pod-kill (cluster injector): delete the target Pod through the Kubernetes API with the
experiment's `gracePeriod`, as Chaos Mesh does; its controller (Deployment, StatefulSet...) makes
a new one. One-shot: `recover` is a no-op. The delete carries the selected Pod's uid as a
precondition, so a Pod re-created under the same name since selection is never killed by mistake;
a Pod already gone counts as done.

Local mode's process pods have no API object to delete: there, `faults/pod_kill.py` SIGKILLs them.
"""

from __future__ import annotations

from chaosbus.common.messages import FaultSpec, PodKill
from chaosbus.injector.faults import FaultContext, FaultError
from chaosbus.injector.podapi import PodApi, PodApiError, gone_reason


class ApiPodKill:
    name = "pod-kill"
    one_shot = True

    def __init__(self, pods: PodApi) -> None:
        self.pods = pods

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        a = ctx.action
        grace = spec.grace_period if isinstance(spec, PodKill) else 0
        if not a.pod_uid:  # a delete by name alone could kill a Pod that was never selected
            raise FaultError(
                f"refused: no pod uid for {a.namespace}/{a.pod_name}: a Pod is only deleted with its "
                "uid as a precondition",
                retryable=False,
            )
        try:
            pod = self.pods.delete(a.namespace, a.pod_name, grace_period=grace, uid=a.pod_uid)
        except PodApiError as e:
            if e.status == 409:  # the uid precondition failed: the selected Pod is already gone
                return (
                    f"target gone: pod {a.namespace}/{a.pod_name} was re-created since selection "
                    f"(uid {a.pod_uid} no longer exists); nothing to kill"
                )
            raise FaultError(f"deleting pod {a.namespace}/{a.pod_name}: {e}", retryable=e.status != 403) from e
        if pod is None:
            return f"{gone_reason(None, a.namespace, a.pod_name, a.pod_uid)}; nothing to kill"
        return f"pod deleted (gracePeriodSeconds={grace})"

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        return "pod-kill is one-shot: nothing to recover"
