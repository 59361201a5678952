"""pod-failure (cluster injector): every container and init container of the target Pod runs the
pause image until recovered; the originals live in Chaos Mesh's annotation keys on the Pod (see
`podpatch`), so recovering needs nothing but the Pod. Done through the Kubernetes API, so only
`injector --cluster` registers it; a node injector reports pod-failure as unsupported.

Pod gone, or replaced by another Pod of the same name (a new uid), counts as recovered. A patch
refused because the Pod changed since it was read (a failed `test` operation) is re-read and
re-planned a few times before the target fails (retryable).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chaosbus.common.messages import FaultSpec
from chaosbus.injector import podpatch
from chaosbus.injector.faults import FaultContext, FaultError
from chaosbus.injector.podapi import PodApi, PodApiError, gone_reason

ATTEMPTS = 5
Planner = Callable[[dict[str, Any]], list[dict[str, Any]]]


class PodFailure:
    name = "pod-failure"
    one_shot = False

    def __init__(self, pods: PodApi, pause_image: str = podpatch.DEFAULT_PAUSE_IMAGE) -> None:
        self.pods, self.pause_image = pods, pause_image

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        def plan(pod: dict[str, Any]) -> list[dict[str, Any]]:
            return podpatch.apply_patch(pod, ctx.experiment_name, self.pause_image)

        gone, pod = self._patch(ctx, plan)
        if gone:
            raise FaultError(gone, retryable=False)
        assert pod is not None
        return f"containers {', '.join(podpatch.paused(pod, self.pause_image))} run {self.pause_image}"

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        def plan(pod: dict[str, Any]) -> list[dict[str, Any]]:
            return podpatch.recover_patch(pod, ctx.experiment_name)

        gone, pod = self._patch(ctx, plan)
        if gone:
            return f"{gone}; nothing to restore"
        assert pod is not None
        still = podpatch.paused(pod, self.pause_image)
        if still:
            return f"images restored; {', '.join(still)} still paused by another experiment"
        return "original images restored"

    def _patch(self, ctx: FaultContext, plan: Planner) -> tuple[str | None, dict[str, Any] | None]:
        """Read, plan, patch, until the patch lands; (why the Pod is gone, None) or (None, Pod)."""
        a = ctx.action
        if not a.pod_uid:  # the patch's uid test would never pass, and a patch by name alone is never sent
            raise FaultError(
                f"refused: no pod uid for {a.namespace}/{a.pod_name}: a Pod is only patched with its "
                "uid as a precondition",
                retryable=False,
            )
        last = ""
        for _ in range(ATTEMPTS):
            pod = self._get(a.namespace, a.pod_name)
            gone = gone_reason(pod, a.namespace, a.pod_name, a.pod_uid)
            if gone:
                return gone, None
            assert pod is not None
            ops = plan(pod)
            if not ops:
                return None, pod
            try:
                return None, self.pods.json_patch(a.namespace, a.pod_name, ops)
            except PodApiError as e:
                if e.status == 404:
                    return gone_reason(None, a.namespace, a.pod_name, a.pod_uid), None
                if e.status not in (409, 422):
                    raise FaultError(f"patching pod {a.namespace}/{a.pod_name}: {e}", retryable=True) from e
                last = str(e)  # changed since read (a failed test op): read again
        raise FaultError(f"pod {a.namespace}/{a.pod_name} kept changing while patched: {last}", retryable=True)

    def _get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.pods.get(namespace, name)
        except PodApiError as e:
            raise FaultError(f"reading pod {namespace}/{name}: {e}", retryable=True) from e
