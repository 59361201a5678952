"""pod-failure (local mode): the target process pod's command stops and stays stopped until
recovered, then starts afresh (a new PID), as a container restarted from its original image would.

The node injector places a hold (chaosbus.common.podhold) in the pod's hold directory, which its
supervisor watches: the supervisor stops the command, reports the pod not ready, and starts the
command again once no hold is in force. The hold carries the fault's deadline, so the supervisor
ends it on time even when the injector is dead; recovery, the restarted injector's reconcile and
the orphan sweeper remove holds by the journal entry that placed them.

A runtime container (cluster mode) is not a process pod: there pod-failure swaps images through
the Kubernetes API (`injector --cluster`, faults/pod_failure.py). A pod whose hold directory is
gone (removed meanwhile) counts as recovered.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from chaosbus.common import podhold, processid
from chaosbus.common.messages import FaultSpec, TargetAction
from chaosbus.common.netns import NETNS_RUN_DIR
from chaosbus.injector.backends.kit import Backends
from chaosbus.injector.faults import FaultContext, FaultError, register
from chaosbus.injector.journal import entry_key
from chaosbus.injector.runtime import ContainerHandle

STOP_TIMEOUT_S = 10.0  # the supervisor looks at its holds ten times a second


def _netns_of(containers: Sequence[ContainerHandle]) -> str:
    """The name of the process pod's network namespace ("" when no container shows one)."""
    for c in containers:
        if c.alive and os.path.dirname(c.netns_path) == NETNS_RUN_DIR:
            return os.path.basename(c.netns_path)
    return ""


def _where(original: Mapping[str, Any], containers: Sequence[ContainerHandle]) -> str:
    return str(original.get("netns") or "") or _netns_of(containers)


def _running(containers: Sequence[ContainerHandle]) -> list[int]:
    ids = [processid.parse(c.container_id) for c in containers if c.alive]
    return [i.pid for i in ids if i is not None and processid.is_running(i)]


class HoldOrphans:
    """Holds in a process pod's hold directory that no open pod-failure entry placed."""

    what = "pod-failure hold"

    def find(self, netns_path: str, backends: Backends) -> list[str]:
        if os.path.dirname(netns_path) != NETNS_RUN_DIR:
            return []
        return podhold.names(podhold.pod_dir(os.path.basename(netns_path)))

    def owned(self, originals: list[dict[str, Any]]) -> set[str] | None:
        return {str(o.get("hold")) for o in originals if o.get("hold")}

    def remove(self, netns_path: str, item: str, backends: Backends) -> None:
        podhold.remove(podhold.pod_dir(os.path.basename(netns_path)), item)


class ProcessPodFailure:
    name = "pod-failure"
    one_shot = False
    orphans = HoldOrphans()

    def original_state(
        self, experiment_uid: str, action: TargetAction, containers: list[ContainerHandle], backends: Backends
    ) -> dict[str, Any]:
        """Where the hold goes, journaled first: the pod's network namespace and the hold's file."""
        key = entry_key(experiment_uid, action.selector_key, action.target_id)
        return {"netns": _netns_of(containers), "hold": podhold.file_name(key)}

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> str:
        a = ctx.action
        runtime_ids = [c.container_id for c in ctx.containers if not c.container_id.startswith(processid.SCHEME)]
        if runtime_ids:
            raise FaultError(
                f"{runtime_ids[0]} is a runtime container: pod-failure swaps its images through the "
                "Kubernetes API (scheduler --cluster-injector, injector --cluster)",
                retryable=False,
            )
        key = entry_key(ctx.experiment_uid, a.selector_key, a.target_id)
        netns = _where(ctx.original, ctx.containers)
        if not netns:
            if podhold.everywhere(podhold.file_name(key)):
                return "the command is already stopped by this experiment"
            raise FaultError(f"pod {a.namespace}/{a.pod_name} has no running command to stop", retryable=False)
        if ctx.deadline is not None and ctx.deadline <= time.time():
            return "the deadline has passed: the command was not stopped"
        directory = podhold.pod_dir(netns)
        hold = podhold.Hold(
            key=key, node=ctx.node, experiment=f"{ctx.namespace}/{ctx.experiment_name}", deadline=ctx.deadline
        )
        try:
            podhold.put(directory, hold)
        except FileNotFoundError:
            raise FaultError(
                f"pod {a.namespace}/{a.pod_name} has no supervisor on this node ({directory} is missing)",
                retryable=False,
            ) from None
        pids = _running(ctx.containers)
        stop_by = time.monotonic() + STOP_TIMEOUT_S
        while _running(ctx.containers) and time.monotonic() < stop_by:
            time.sleep(0.02)
        left = _running(ctx.containers)
        if left:  # the executor recovers (removes the hold) after a failed apply
            raise FaultError(
                f"the pod's supervisor did not stop its command (pid {left[0]}) within {STOP_TIMEOUT_S:.0f}s",
                retryable=True,
            )
        until = "until recovered" if ctx.deadline is None else f"for {max(0, round(ctx.deadline - time.time()))}s"
        stopped = f"command stopped (pid {', '.join(map(str, pids))})" if pids else "command stopped"
        return f"{stopped}; the pod is not ready and its command stays stopped {until}"

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        a = ctx.action
        name = str(ctx.original.get("hold") or "") or podhold.file_name(
            entry_key(ctx.experiment_uid, a.selector_key, a.target_id)
        )
        netns = _where(ctx.original, ctx.containers)
        dirs = {podhold.pod_dir(netns)} if netns else set()
        dirs.update(podhold.everywhere(name))
        removed = [d for d in sorted(dirs) if podhold.remove(d, name)]
        if removed:
            return "released: the pod's supervisor starts the command afresh"
        if netns and not podhold.pod_dir(netns).is_dir():
            return "target gone: the pod was removed, nothing to restart"
        return "no hold left: the command was not held"


register(ProcessPodFailure())
