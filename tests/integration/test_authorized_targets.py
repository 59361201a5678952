"""A node injector re-checks what a command tells it, whoever sent it: a runtime container must
carry the CRI label of the pod uid in the command (fake CRI and fake Docker runtimes on real
sockets, real processes); in cluster mode no `process://` id and no Task is accepted; in local
mode a `process://` target must be a process pod's process, never a host process (for a pod-kill
and for a network fault alike). Each refusal is a failed, not retryable, result naming why, and
the process it names is still alive.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fakecri import FakeCri, FakeDocker, runtime_sockets, runtimes

from chaosbus.common import messages as m
from chaosbus.common.config import TargetGuard
from chaosbus.injector import authorize
from chaosbus.injector.backends import procs
from chaosbus.injector.executor import Executor
from chaosbus.injector.journal import Journal
from chaosbus.injector.node import Node

pytestmark = pytest.mark.integration

CID = "0123456789abcdef" * 4
POD_UID = "7d1c6f0e-uid-of-web-0"


@pytest.fixture
def fakes() -> Iterator[tuple[FakeCri, FakeDocker]]:
    tmp = Path(tempfile.mkdtemp(prefix="cbat", dir="/tmp"))
    try:
        with runtimes(tmp) as (cri, docker):
            with runtime_sockets(cri.socket_path, cri.socket_path, docker.socket_path):
                yield cri, docker
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def node_with(tmp_path: Path, policy: authorize.Policy) -> Node:
    journal = Journal(tmp_path / f"journal-{time.monotonic_ns()}.db")
    return Node(journal, Executor(journal, "n1", policy=policy), lease_ttl=15.0)  # the real fault registry


@pytest.fixture
async def cluster_node(tmp_path: Path) -> AsyncIterator[Node]:
    node = node_with(tmp_path, authorize.Policy(mode=authorize.CLUSTER))
    yield node
    node.close()
    node.journal.close()


@pytest.fixture
async def local_node(tmp_path: Path) -> AsyncIterator[Node]:
    node = node_with(tmp_path, authorize.Policy(mode=authorize.LOCAL))
    yield node
    node.close()
    node.journal.close()


@pytest.fixture
def host_process() -> Iterator[subprocess.Popen[bytes]]:
    """An ordinary process of this machine, in the host's network namespace: never a target."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait(5)


def command(
    fault: m.Fault,
    container_ids: list[str],
    *,
    pod_uid: str = POD_UID,
    namespace: str = "team-a",
    kind: str = "PodChaos",
) -> m.NodeCommand:
    action = m.TargetAction(
        target_id=f"{namespace}/web-0",
        op="apply",
        pod_uid=pod_uid,
        namespace=namespace,
        pod_name="web-0",
        container_ids=container_ids,
        fault=fault,
    )
    return m.NodeCommand(
        command_id=f"forged.{time.monotonic_ns()}",
        experiment_uid="exp-forged",
        generation=1,
        kind=kind,
        namespace=namespace,
        name="forged",
        node="n1",
        issued_at=time.time(),
        actions=[action],
    )


async def run(node: Node, cmd: m.NodeCommand) -> m.TargetResult:
    batch = await node.on_command(cmd)
    assert batch is not None and len(batch.results) == 1
    return batch.results[0]


def assert_refused(res: m.TargetResult, why: str) -> None:
    assert not res.ok and not res.retryable, res
    assert res.message.startswith("refused: ") and why in res.message, res.message


# --- runtime containers: the pod uid label --------------------------------------------------------


@pytest.mark.parametrize("scheme", ["containerd", "docker"])
async def test_a_container_of_another_pod_is_not_killed(
    fakes: tuple[FakeCri, FakeDocker], cluster_node: Node, scheme: str
) -> None:
    fake = fakes[1] if scheme == "docker" else fakes[0]
    pid = fake.containers.start(CID, pod_uid="uid-of-some-other-pod")
    res = await run(cluster_node, command(m.ContainerKill(), [f"{scheme}://{CID}"]))
    assert_refused(res, f"belongs to pod uid uid-of-some-other-pod, not to {POD_UID}")
    assert procs.process_alive(pid)
    assert fake.containers.kills() == []  # nothing reached the runtime's kill


@pytest.mark.parametrize("scheme", ["containerd", "docker"])
async def test_a_container_without_the_kubelets_pod_label_is_not_touched(
    fakes: tuple[FakeCri, FakeDocker], cluster_node: Node, scheme: str
) -> None:
    fake = fakes[1] if scheme == "docker" else fakes[0]
    pid = fake.containers.start(CID)  # e.g. a container someone started by hand on the node
    res = await run(cluster_node, command(m.ContainerKill(), [f"{scheme}://{CID}"]))
    assert_refused(res, "carries no io.kubernetes.pod.uid label")
    assert procs.process_alive(pid) and fake.containers.kills() == []


@pytest.mark.parametrize("scheme", ["containerd", "docker"])
async def test_the_commands_own_pod_is_killed(
    fakes: tuple[FakeCri, FakeDocker], cluster_node: Node, scheme: str
) -> None:
    fake = fakes[1] if scheme == "docker" else fakes[0]
    pid = fake.containers.start(CID, pod_uid=POD_UID, pod_namespace="team-a")
    res = await run(cluster_node, command(m.ContainerKill(), [f"{scheme}://{CID}"]))
    assert res.ok and res.message == "killed 1 container(s) through the runtime", res
    assert not procs.process_alive(pid) and fake.containers.kills() == [CID]


async def test_a_command_cannot_pass_a_protected_pod_off_as_another_namespaces(
    fakes: tuple[FakeCri, FakeDocker], cluster_node: Node
) -> None:
    # The right uid (a pod's uid is no secret) but a false namespace, to slip past the protected check.
    pid = fakes[0].containers.start(CID, pod_uid=POD_UID, pod_namespace="kube-system")
    res = await run(cluster_node, command(m.ContainerKill(), [f"containerd://{CID}"], namespace="team-a"))
    assert_refused(res, "belongs to namespace kube-system, not to team-a")
    assert procs.process_alive(pid) and fakes[0].containers.kills() == []


async def test_a_network_fault_never_lands_in_the_nodes_own_network_namespace(
    fakes: tuple[FakeCri, FakeDocker], cluster_node: Node
) -> None:
    # The fake runtime's container is a child of this process: it shares the node's netns, as a
    # hostNetwork pod's container does. The pod uid is right; the netns is what is refused.
    pid = fakes[0].containers.start(CID, pod_uid=POD_UID)
    partition = m.Partition(rules=[m.PartitionRule(chain="output")])
    res = await run(cluster_node, command(partition, [f"containerd://{CID}"], kind="NetworkChaos"))
    assert_refused(res, "shares the node's own network namespace (a hostNetwork pod)")
    assert procs.process_alive(pid)


async def test_a_protected_namespace_is_refused_on_the_node_too(
    fakes: tuple[FakeCri, FakeDocker], cluster_node: Node
) -> None:
    pid = fakes[0].containers.start(CID, pod_uid=POD_UID)
    res = await run(cluster_node, command(m.ContainerKill(), [f"containerd://{CID}"], namespace="kube-system"))
    assert_refused(res, "namespace kube-system is protected")
    assert procs.process_alive(pid) and fakes[0].containers.calls == []  # not even asked


# --- cluster mode: no bare pids, no Tasks ----------------------------------------------------------


async def test_cluster_mode_refuses_process_ids(cluster_node: Node, host_process: subprocess.Popen[bytes]) -> None:
    res = await run(cluster_node, command(m.PodKill(), [f"process://{host_process.pid}"]))
    assert_refused(res, f"process://{host_process.pid} is a process id: in cluster mode")
    assert host_process.poll() is None


async def test_cluster_mode_node_injector_runs_no_task(cluster_node: Node, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    task = m.Task(argv=["touch", str(marker)], timeout_s=5)
    res = await run(cluster_node, command(task, [], kind="WorkflowNode"))
    assert_refused(res, "a node injector in cluster mode runs no Task")
    assert not marker.exists()


# --- local mode: process pods only -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [m.PodKill(), m.ContainerKill(), m.Partition(rules=[m.PartitionRule(chain="output")])],
    ids=["pod-kill", "container-kill", "partition"],
)
async def test_local_mode_never_touches_a_host_process(
    local_node: Node, host_process: subprocess.Popen[bytes], fault: m.Fault
) -> None:
    res = await run(local_node, command(fault, [f"process://{host_process.pid}"]))
    assert_refused(res, "is not a process pod's process")
    assert host_process.poll() is None


async def test_local_mode_still_runs_tasks_as_processes(local_node: Node, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    res = await run(local_node, command(m.Task(argv=["touch", str(marker)], timeout_s=5), [], kind="WorkflowNode"))
    assert res.ok and marker.exists(), res


def test_the_guard_on_the_node_follows_the_settings() -> None:
    policy = authorize.Policy(guard=TargetGuard(frozenset({"payments"})))
    cmd = command(m.PodKill(), [], namespace="payments")
    assert authorize.refuse_action(policy, cmd, cmd.actions[0]) is not None
    other = command(m.PodKill(), [], namespace="kube-system")
    assert authorize.refuse_action(policy, other, other.actions[0]) is None
