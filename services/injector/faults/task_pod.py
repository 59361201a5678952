"""task (cluster injector): a Workflow Task step run as a Pod, the way Chaos Mesh runs it: the
template's container (and volumes) in a Pod with `restartPolicy: Never` in the workflow's
namespace, labelled with the workflow and the WorkflowNode, owned by the WorkflowNode (so the
garbage collector removes it with the node). The fault waits until the Pod has Succeeded or
Failed, then reads the exit code from `containerStatuses[].state.terminated.exitCode` and the
first `max_stdout` bytes of the container's log (`pods/{name}/log`).

The Pod's name is derived from the WorkflowNode (its name and uid), so an injector restarted in
the middle finds the Pod it created and waits for that one instead of starting a second.
A finished Pod is kept, as Chaos Mesh keeps it, for `kubectl logs`; one that cannot finish (its
timeout passed, an image name that can never be pulled) is deleted. Every failure names its
cause and ends the step (the orchestrator records it in the WorkflowNode's status).

No default resource limits: Chaos Mesh's code means to set 1 CPU and 1000 (bytes of) memory on
a container without limits, but writes them to a copy, so its Pods get none either; a 1000-byte
limit would kill every task. No `blockOwnerDeletion` on the owner reference: it would need
rights on WorkflowNodes' finalizers, and nothing waits on a Task Pod's deletion.

Local mode's node injector runs the same step as a process instead (`faults/task.py`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chaosbus.common.messages import FaultSpec, Task
from chaosbus.common.objects import parse_rfc3339
from chaosbus.injector.faults import CommandOutput, FaultContext, FaultError
from chaosbus.injector.podapi import Pod, PodApi, PodApiError
from chaosbus.injector.podpolicy import TaskPodPolicy, refusal

LABEL_WORKFLOW = "chaos-mesh.org/workflow"  # the labels Chaos Mesh puts on its task Pods
LABEL_CONTROLLED_BY = "chaos-mesh.org/controlled-by"
OWNER_API_VERSION = "chaos-mesh.org/v1alpha1"
DEFAULT_CONTAINER = "task"
POLL_MIN_S, POLL_MAX_S = 0.2, 1.0
# Waiting reasons a kubelet never gets past on its own: fail now rather than at the timeout.
HOPELESS = frozenset({"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"})
TRANSIENT = frozenset({0, 429, 500, 502, 503, 504})  # worth asking again until the deadline


def pod_name(node: str, node_uid: str) -> str:
    """`<node>-task-<6 hex of the node's uid>`: the same for every attempt at this node, another
    for a node re-created under the same name.
    """
    return f"{node[:240]}-task-{hashlib.sha256(node_uid.encode()).hexdigest()[:6]}"


def pod_body(namespace: str, node: str, spec: Task) -> Pod:
    """The Task Pod for WorkflowNode `node`.

    Raises:
        FaultError: (not retryable) the command carries no container image or no owner uid.
    """
    if not spec.container.get("image"):
        raise FaultError("task.container.image: a Task Pod needs an image", retryable=False)
    if not spec.workflow_node_uid:
        raise FaultError(
            "task has no WorkflowNode uid to own its Pod (a scheduler older than this injector?)", retryable=False
        )
    container = {"name": DEFAULT_CONTAINER, **spec.container}
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if spec.volumes:
        pod_spec["volumes"] = list(spec.volumes)
    labels = {LABEL_CONTROLLED_BY: node, **({LABEL_WORKFLOW: spec.workflow} if spec.workflow else {})}
    owner = {
        "apiVersion": OWNER_API_VERSION,
        "kind": "WorkflowNode",
        "name": node,
        "uid": spec.workflow_node_uid,
        "controller": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(node, spec.workflow_node_uid),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": pod_spec,
    }


@dataclass(frozen=True)
class Progress:
    """Where a Task Pod stands: `done` once it can go no further; then `exit_code`, or `problem`
    when it ended without one. `state` says what it was doing, for a timeout's message.
    """

    done: bool
    exit_code: int | None = None
    problem: str = ""
    state: str = ""


def progress(pod: Pod, container: str = DEFAULT_CONTAINER) -> Progress:
    """Read a Task Pod's status the way Chaos Mesh does: the task container's state."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    statuses = status.get("containerStatuses") or [{}]
    first = next((s for s in statuses if s.get("name") == container), statuses[0])
    state = first.get("state") or {}
    waiting = state.get("waiting") or {}
    if phase in ("Succeeded", "Failed"):
        terminated = state.get("terminated") or (first.get("lastState") or {}).get("terminated") or {}
        if isinstance(terminated.get("exitCode"), int):
            return Progress(True, exit_code=terminated["exitCode"], state=phase)
        why = ": ".join(x for x in (status.get("reason"), status.get("message")) if x) or "no reason given"
        return Progress(True, problem=f"the Pod {phase} without a container exit code ({why})", state=phase)
    if waiting.get("reason") in HOPELESS:
        detail = f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
        return Progress(
            True, problem=f"container {first.get('name', DEFAULT_CONTAINER)} cannot start ({detail})", state=phase
        )
    return Progress(False, state=f"{phase}, waiting: {waiting['reason']}" if waiting.get("reason") else phase)


def started_at(pod: Pod) -> float | None:
    try:
        return parse_rfc3339((pod.get("metadata") or {}).get("creationTimestamp") or "")
    except ValueError:
        return None


def owned_by(pod: Pod, node_uid: str) -> bool:
    return any(ref.get("uid") == node_uid for ref in (pod.get("metadata") or {}).get("ownerReferences") or [])


class TaskPod:
    name = "task"
    one_shot = True

    def __init__(
        self,
        pods: PodApi,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        policy: TaskPodPolicy | None = None,
    ) -> None:
        self.pods, self.clock, self.sleep = pods, clock, sleep
        self.policy = policy or TaskPodPolicy()

    def apply(self, ctx: FaultContext, spec: FaultSpec) -> CommandOutput:
        assert isinstance(spec, Task)
        body = pod_body(ctx.namespace, ctx.experiment_name, spec)
        where = f"task pod {ctx.namespace}/{body['metadata']['name']}"
        why = refusal(self.policy, ctx.namespace, body)
        if why is not None:
            raise FaultError(f"refused: {where}: {why}", retryable=False)
        deadline = self.clock() + spec.timeout_s
        pod = self._create_or_attach(ctx.namespace, body, spec, deadline, where)
        created = started_at(pod)
        if created is not None:  # re-attached after a restart: the timeout counts from the Pod's start
            deadline = min(deadline, created + 1.0 + spec.timeout_s)  # +1: the timestamp is in whole seconds
        container = body["spec"]["containers"][0]["name"]
        pod, done = self._wait(ctx.namespace, pod, container, deadline, where)
        if done.exit_code is None:
            if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                self._delete(ctx.namespace, pod)  # it would sit there forever
            raise FaultError(f"{where}: {done.problem}", retryable=False)
        stdout, note = self._log(ctx.namespace, pod, container, spec.max_stdout)
        return CommandOutput(
            message=f"{where} exited with code {done.exit_code}{note}", exit_code=done.exit_code, stdout=stdout
        )

    def recover(self, ctx: FaultContext, spec: FaultSpec) -> str:
        return "a task changes nothing that could be recovered (its finished Pod goes with the WorkflowNode)"

    def _create_or_attach(self, namespace: str, body: Pod, spec: Task, deadline: float, where: str) -> Pod:
        """The Pod created now, or the one an earlier attempt created (ours by its owner uid)."""
        delay = POLL_MIN_S
        while True:
            try:
                return self.pods.create(namespace, body)
            except PodApiError as e:
                if e.status not in TRANSIENT | {409}:
                    raise FaultError(f"{where} could not be created: {e}", retryable=False) from e
                last = str(e)
            if last.startswith("HTTP 409"):
                try:
                    existing = self.pods.get(namespace, body["metadata"]["name"])
                except PodApiError as e:
                    existing, last = None, str(e)
                if existing is not None and not owned_by(existing, spec.workflow_node_uid):
                    raise FaultError(
                        f"{where} exists and belongs to something else (not WorkflowNode uid {spec.workflow_node_uid})",
                        retryable=False,
                    )
                if existing is not None and not (existing.get("metadata") or {}).get("deletionTimestamp"):
                    return existing
                last = "an earlier Pod of that name is still being deleted"
            if self.clock() >= deadline:
                raise FaultError(f"{where} could not be created before the step's timeout: {last}", retryable=False)
            self.sleep(delay)
            delay = min(POLL_MAX_S, delay * 2)

    def _wait(self, namespace: str, pod: Pod, container: str, deadline: float, where: str) -> tuple[Pod, Progress]:
        """Poll until the Pod can go no further; past the deadline delete it and fail."""
        name = pod["metadata"]["name"]
        delay = POLL_MIN_S
        while True:
            done = progress(pod, container)
            if done.done:
                return pod, done
            now = self.clock()
            if now >= deadline:
                self._delete(namespace, pod)
                raise FaultError(
                    f"{where} did not finish before the step's timeout ({done.state}); Pod deleted", retryable=False
                )
            self.sleep(max(0.0, min(delay, deadline - now)))
            delay = min(POLL_MAX_S, delay * 2)
            current = self._get(namespace, name)
            if current is None:
                raise FaultError(f"{where} was deleted before it finished", retryable=False)
            pod = current

    def _get(self, namespace: str, name: str) -> Pod | None:
        """The Pod; on a transient API error, the question stays open (an empty status) rather than failing."""
        try:
            return self.pods.get(namespace, name)
        except PodApiError as e:
            if e.status in TRANSIENT:
                return {"metadata": {"name": name}, "status": {"phase": "Unknown"}}
            raise FaultError(f"reading task pod {namespace}/{name}: {e}", retryable=False) from e

    def _delete(self, namespace: str, pod: Pod) -> None:
        meta = pod.get("metadata") or {}
        try:
            self.pods.delete(namespace, meta["name"], grace_period=0, uid=meta.get("uid", ""))
        except PodApiError:
            pass  # 409: already replaced; otherwise the WorkflowNode's garbage collection still takes it

    def _log(self, namespace: str, pod: Pod, container: str, limit: int) -> tuple[str, str]:
        """(the log's first `limit` bytes, a note for the message when it could not be read)."""
        try:
            return self.pods.log(namespace, pod["metadata"]["name"], container, limit), ""
        except PodApiError as e:
            return "", f" (its log could not be read: {e})"
