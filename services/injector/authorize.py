"""An injector re-checks what it is told before it touches anything: whoever sent a command (a
scheduler talked into a bad selection, or a forged message), an apply only goes ahead on a target
the injector itself can see is a legitimate one. A refusal is a failed, not retryable, per-target
result starting with `refused:`, so the status record says why.

Checks before resolving (`refuse_action`): the target's namespace is not protected; the cluster
injector acts on a Pod only by uid (a delete or patch by name alone could hit a Pod the experiment
never selected); a node injector on a Kubernetes node runs no Task (there a Task is a Pod, made by
the cluster injector) and resolves no `process://` id.

Checks on what the node shows (`refuse_handles`): a runtime container carries the CRI labels
`io.kubernetes.pod.uid` and `io.kubernetes.pod.namespace` of the pod in the command (so the
namespace checked above is the real one); a `process://` target (local mode) lives in a named
network namespace other than the injector's own, i.e. in a process pod's sandbox, never in the
host's, and for faults that kill processes, when it carries the pod uid and namespace its
supervisor gave it, they are the command's (network faults skip that read, ~0.2 ms a target: the
sandbox check already keeps them off the host); a network fault never lands in the node's own
network namespace unless host-network testing is on.

Pure apart from reading /proc and stat(2) of namespace files.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

from chaosbus.common import messages as m
from chaosbus.common.config import TargetGuard
from chaosbus.common.netns import NETNS_RUN_DIR
from chaosbus.injector import runtime

REFUSED = "refused: "
LOCAL, CLUSTER = "local", "cluster"
MODES = (LOCAL, CLUSTER)
NETWORK_FAULTS = (m.Partition, m.Shaping)
API_FAULTS = (m.PodKill, m.PodFailure)


@dataclass(frozen=True)
class Policy:
    """What this injector accepts. `mode`: `local` (process pods, Tasks as processes) or `cluster`
    (a node injector on a Kubernetes node: runtime containers only). `api`: the cluster injector,
    which acts on Pods through the API.
    """

    guard: TargetGuard = field(default_factory=TargetGuard)
    mode: str = LOCAL
    api: bool = False
    # The node's own network namespace is init's (the injector sees the host's PIDs: local mode, or
    # hostPID in the DaemonSet); the injector's own is never a target either (in the DaemonSet it is
    # the injector pod's, in local mode the host's).
    own_netns: tuple[str, ...] = ("/proc/1/ns/net", "/proc/self/ns/net")

    @functools.cached_property
    def own_netns_inodes(self) -> frozenset[int]:
        """Read once: neither namespace changes while the injector runs."""
        return frozenset(i for i in map(_inode, self.own_netns) if i is not None)


def refuse_action(policy: Policy, cmd: m.NodeCommand, action: m.TargetAction) -> str | None:
    """Why this apply must not run, judged from the command alone (None: go on)."""
    fault = action.fault
    namespace = cmd.namespace if isinstance(fault, m.Task) else action.namespace
    if isinstance(fault, m.Task) and not policy.api and policy.mode == CLUSTER:
        return (
            f"{REFUSED}a node injector in cluster mode runs no Task: in a cluster a Task runs as a Pod "
            "(scheduler --cluster-injector, injector --cluster)"
        )
    if (policy.api or not isinstance(fault, m.Task)) and policy.guard.protected(namespace):
        return f"{REFUSED}namespace {namespace} is protected: chaosbus never targets it (PROTECTED_NAMESPACES)"
    if policy.api and isinstance(fault, API_FAULTS) and not action.pod_uid:
        return (
            f"{REFUSED}no pod uid for {action.namespace}/{action.pod_name}: a Pod is only ever deleted or "
            "patched with its uid as a precondition"
        )
    if policy.mode == CLUSTER and not policy.api:
        bare = [cid for cid in action.container_ids if cid.startswith("process://")]
        if bare:
            return (
                f"{REFUSED}{bare[0]} is a process id: in cluster mode a target is a container named by its "
                "runtime (containerd://, cri-o://, docker://)"
            )
    return None


def refuse_handles(policy: Policy, action: m.TargetAction, handles: list[runtime.ContainerHandle]) -> str | None:
    """Why the resolved containers are not the command's pod, or not to be touched (None: go on)."""
    if policy.api:
        return None
    network = isinstance(action.fault, NETWORK_FAULTS)
    host = policy.own_netns_inodes
    for h in handles:
        if not h.alive:
            continue  # gone: the fault finds nothing to do, and says so
        scheme = h.container_id.partition("://")[0]
        netns = _inode(h.netns_path)
        if scheme in runtime.KNOWN_RUNTIMES:
            why = _wrong_pod(h, action, h.pod_uid, h.pod_namespace)
        else:
            why = _not_a_process_pod(h, action, netns, host, check_uid=not network)
        if why is None and network and not policy.guard.allow_host_network_testing and netns in host:
            why = (
                f"{h.container_id} shares the node's own network namespace (a hostNetwork pod): network faults "
                "never target it (ALLOW_HOST_NETWORK_TESTING is off)"
            )
        if why is not None:
            return REFUSED + why
    return None


def _wrong_pod(
    h: runtime.ContainerHandle, action: m.TargetAction, uid: str | None, namespace: str | None
) -> str | None:
    """The node's word on the container's pod against the command's. The namespace is checked too:
    the protected-namespace check trusts the command's namespace only because it is the real one.
    """
    if uid == "":
        return f"{h.container_id} carries no {runtime.POD_UID_LABEL} label: it is not a Kubernetes pod's container"
    if uid is not None and uid != action.pod_uid:
        return f"{h.container_id} belongs to pod uid {uid}, not to {action.pod_uid or '(none given)'}"
    if namespace is not None and namespace != action.namespace:
        return f"{h.container_id} belongs to namespace {namespace}, not to {action.namespace or '(none given)'}"
    return None


def _not_a_process_pod(
    h: runtime.ContainerHandle, action: m.TargetAction, netns: int | None, host: frozenset[int], *, check_uid: bool
) -> str | None:
    if not h.netns_path.startswith(NETNS_RUN_DIR + "/") or netns is None or netns in host:
        return (
            f"{h.container_id} is not a process pod's process: it does not live in a pod's own named network "
            f"namespace ({NETNS_RUN_DIR})"
        )
    if not check_uid:
        return None
    uid, namespace = runtime.process_pod(h.pid)
    return _wrong_pod(h, action, uid, namespace) if uid else None  # a process without the marker: not ours to tell


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None
