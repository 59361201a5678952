"""Faults against the real kernel: four process pods, TCP connect matrices, real SIGKILLs.

Partition rules are built the way the scheduler sends them: for source S and target T,
`to` = S output drop dst T + T input drop src S; `from` = S input drop src T + T output drop dst S.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from chaosbus.cli import podnet
from chaosbus.common import netns as nsutil
from chaosbus.common.messages import (
    ContainerKill,
    FaultSpec,
    HelloWorld,
    Partition,
    PartitionRule,
    PodKill,
    TargetAction,
)
from chaosbus.injector import faults, runtime
from chaosbus.injector.backends import nft, procs
from chaosbus.injector.backends.kit import Backends, process_backends
from chaosbus.injector.faults.partition import table_name

from .conftest import PORTS, Lab, Link, Pod

pytestmark = pytest.mark.privileged

Rules = dict[int, list[PartitionRule]]  # pod index -> its rules


def ctx_for(
    uid: str,
    pids: list[int],
    spec: FaultSpec,
    selector: str = ".",
    deadline: float | None = None,
    backends: Backends | None = None,
) -> faults.FaultContext:
    """The context of one target, on `backends` (default: the process's default backends)."""
    ids = [f"process://{pid}" for pid in pids]
    action = TargetAction(
        target_id="default/pod",
        selector_key=selector,
        op="apply",
        namespace="default",
        pod_name="pod",
        container_ids=ids,
        fault=spec,
    )
    return faults.FaultContext(
        experiment_uid=uid,
        experiment_name=uid,
        namespace="default",
        action=action,
        containers=[runtime.resolve(i) for i in ids],
        deadline=deadline,
        backends=backends or process_backends(),
    )


class Experiment:
    """One partition experiment spread over several pods, applied and recovered like the injector."""

    def __init__(self, lab: Lab, uid: str, rules: Rules) -> None:
        self.lab, self.uid, self.rules = lab, uid, rules
        self.fault = faults.get("partition")

    def _each(self, op: str) -> list[str]:
        messages = []
        for index, rules in self.rules.items():
            spec = Partition(rules=rules)
            ctx = ctx_for(self.uid, [self.lab.pods[index].server.pid], spec)
            messages.append(getattr(self.fault, op)(ctx, spec))
        return messages

    def apply(self) -> list[str]:
        return self._each("apply")

    def recover(self) -> list[str]:
        return self._each("recover")


@pytest.fixture
def experiments(lab: Lab) -> Iterator[list[Experiment]]:
    """Experiments a test starts; recovered at the end whatever happened, then checked clean."""
    started: list[Experiment] = []
    yield started
    for exp in started:
        exp.recover()
    for pod in lab.pods:
        assert not chaosbus_tables(pod), f"pod {pod.index} kept tables"


def chaosbus_tables(pod: Pod) -> list[str]:
    return [t for t in nft.list_tables(pod.net.netns_path) if t.startswith(nft.TABLE_PREFIX)]


def start(lab: Lab, experiments: list[Experiment], uid: str, rules: Rules) -> Experiment:
    exp = Experiment(lab, uid, rules)
    experiments.append(exp)
    exp.apply()
    return exp


def direction_rules(lab: Lab, direction: str, s: int, t: int) -> Rules:
    s_ip, t_ip = lab.pods[s].ip, lab.pods[t].ip
    rules: Rules = {s: [], t: []}
    if direction in ("to", "both"):
        rules[s].append(PartitionRule(chain="output", peers=[t_ip]))
        rules[t].append(PartitionRule(chain="input", peers=[s_ip]))
    if direction in ("from", "both"):
        rules[s].append(PartitionRule(chain="input", peers=[t_ip]))
        rules[t].append(PartitionRule(chain="output", peers=[s_ip]))
    return rules


def test_baseline_every_pod_reaches_every_pod(lab: Lab) -> None:
    assert lab.reachable(PORTS) == lab.all_links(PORTS)


@pytest.mark.parametrize(
    ("direction", "blocked"),
    [
        ("to", {(0, 1, 8080)}),
        ("from", {(1, 0, 8080)}),
        ("both", {(0, 1, 8080), (1, 0, 8080)}),
    ],
)
def test_direction_blocks_exactly_its_links(
    lab: Lab,
    experiments: list[Experiment],
    direction: str,
    blocked: set[Link],
) -> None:
    exp = start(lab, experiments, f"dir-{direction}", direction_rules(lab, direction, 0, 1))
    assert lab.reachable() == lab.all_links() - blocked
    exp.recover()
    assert lab.reachable() == lab.all_links()


def test_no_peers_isolates_outbound_but_not_inbound_or_loopback(lab: Lab, experiments: list[Experiment]) -> None:
    start(lab, experiments, "isolate", {0: [PartitionRule(chain="output")]})
    got = lab.reachable(extra=((0, "127.0.0.1"),))
    assert got == {link for link in lab.all_links() if link[0] != 0} | {(0, "127.0.0.1", 8080)}


def test_external_cidr_and_cidr_port(lab: Lab, experiments: list[Experiment]) -> None:
    subnet = str(lab.subnet)
    start(
        lab,
        experiments,
        "ext",
        {
            0: [PartitionRule(chain="output", external=[f"{lab.pods[2].ip}/32"])],
            3: [PartitionRule(chain="output", external=[f"{subnet}:8081"])],
        },
    )
    blocked = {(0, 2, port) for port in PORTS} | {(3, d, 8081) for d in range(3)}
    assert lab.reachable(PORTS) == lab.all_links(PORTS) - blocked


def test_external_hostname_with_port_is_resolved(lab: Lab, experiments: list[Experiment]) -> None:
    start(lab, experiments, "host", {1: [PartitionRule(chain="output", external=["localhost:8081"])]})
    got = lab.reachable(PORTS, extra=((1, "127.0.0.1"),))
    assert (1, "127.0.0.1", 8080) in got and (1, "127.0.0.1", 8081) not in got
    assert {link for link in got if isinstance(link[1], int)} == lab.all_links(PORTS)


def test_two_partitions_on_one_pod_compose_and_recover_independently(
    lab: Lab,
    experiments: list[Experiment],
) -> None:
    a = start(lab, experiments, "compose-a", {0: [PartitionRule(chain="output", peers=[lab.pods[1].ip])]})
    b = start(lab, experiments, "compose-b", {0: [PartitionRule(chain="output", peers=[lab.pods[2].ip])]})
    assert sorted(chaosbus_tables(lab.pods[0])) == sorted([table_name("compose-a", "."), table_name("compose-b", ".")])
    assert lab.reachable() == lab.all_links() - {(0, 1, 8080), (0, 2, 8080)}
    assert a.recover() == [f"partition recovered: nft table {table_name('compose-a', '.')} removed"]
    assert lab.reachable() == lab.all_links() - {(0, 2, 8080)}
    b.recover()
    a.recover()  # twice is fine
    assert lab.reachable() == lab.all_links()
    assert chaosbus_tables(lab.pods[0]) == []


def test_the_kernel_ends_a_partition_at_its_deadline_with_nobody_recovering_it(lab: Lab) -> None:
    spec = Partition(rules=[PartitionRule(chain="output", peers=[lab.pods[1].ip])])
    deadline = float(int(time.time()) + 3)  # whole seconds, as creationTimestamp + duration
    ctx = ctx_for("kernel-deadline", [lab.pods[0].server.pid], spec, deadline=deadline)
    fault = faults.get("partition")
    fault.apply(ctx, spec)
    try:
        assert (0, 1, 8080) not in lab.reachable()
        time.sleep(max(0.0, deadline - time.time()) + 0.05)
        # No recover ran: the table is still there, and the kernel no longer drops.
        assert chaosbus_tables(lab.pods[0]) == [table_name("kernel-deadline", ".")]
        assert lab.reachable() == lab.all_links()
    finally:
        fault.recover(ctx, spec)


def test_apply_is_idempotent_and_replaces_the_table(lab: Lab, experiments: list[Experiment]) -> None:
    first = start(lab, experiments, "idem", {2: [PartitionRule(chain="output", peers=[lab.pods[3].ip])]})
    first.apply()
    assert chaosbus_tables(lab.pods[2]) == [table_name("idem", ".")]
    # The same experiment with new rules: one atomic replace, the old rule is gone.
    start(lab, experiments, "idem", {2: [PartitionRule(chain="output", peers=[lab.pods[1].ip])]})
    assert chaosbus_tables(lab.pods[2]) == [table_name("idem", ".")]
    assert lab.reachable() == lab.all_links() - {(2, 1, 8080)}


def test_partition_timings(lab: Lab, experiments: list[Experiment], capsys: pytest.CaptureFixture[str]) -> None:
    exp = Experiment(
        lab,
        "timing",
        {
            0: [
                PartitionRule(
                    chain="output", peers=[p.ip for p in lab.pods[1:]], external=["10.0.0.0/8:443", "192.0.2.0/24"]
                )
            ]
        },
    )
    experiments.append(exp)
    applies, recovers = [], []
    for _ in range(10):
        t0 = time.perf_counter()
        exp.apply()
        t1 = time.perf_counter()
        exp.recover()
        applies.append(t1 - t0)
        recovers.append(time.perf_counter() - t1)
    with capsys.disabled():
        print(
            f"\npartition apply p50 {sorted(applies)[5] * 1e3:.1f} ms, max {max(applies) * 1e3:.1f} ms; "
            f"recover p50 {sorted(recovers)[5] * 1e3:.1f} ms, max {max(recovers) * 1e3:.1f} ms"
        )
    assert max(applies) < 1.0 and max(recovers) < 1.0


# --- target gone ------------------------------------------------------------------------------


@contextlib.contextmanager
def victim(lab: Lab, index: int) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A process tree in pod `index`: a python parent with a sleeping child; yields (proc, child pid)."""
    code = (
        "import subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(c.pid, flush=True)\ntime.sleep(60)\n"
    )
    proc = lab.spawn(index, [sys.executable, "-c", code])
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    try:
        yield proc, child
    finally:
        procs.kill_tree(proc.pid)
        proc.wait(timeout=5)
        proc.stdout.close()


def test_gone_target_counts_as_recovered(lab: Lab) -> None:
    fault, spec = faults.get("partition"), Partition(rules=[PartitionRule(chain="output")])
    name = f"{lab.bridge}-pg"
    try:
        net = podnet.create_pod_network(
            name, lab.bridge, f"{lab.subnet.network_address + 98}/24", str(lab.subnet.network_address + 1)
        )
        proc = podnet.spawn_in_netns([sys.executable, "-c", "import time; time.sleep(60)"], name)
        ctx = ctx_for("gone", [proc.pid], spec)
        assert ctx.containers[0].netns_path == net.netns_path  # the sandbox, not /proc/<pid>
        fault.apply(ctx, spec)
        assert nft.list_tables(net.netns_path) == [table_name("gone", ".")]
        procs.kill_tree(proc.pid)
        proc.wait(timeout=5)
    finally:
        podnet.delete_pod_network(name)
    dead = ctx_for("gone", [proc.pid], spec)
    assert dead.containers[0].alive is False
    assert fault.recover(dead, spec).startswith("target gone")
    assert fault.recover(ctx, spec).startswith("target gone")  # resolved while alive, netns gone since
    with pytest.raises(faults.FaultError) as err:
        fault.apply(dead, spec)
    assert not err.value.retryable and "target gone" in err.value.message


# --- processes --------------------------------------------------------------------------------


def test_pod_kill_kills_exactly_the_selected_pod(lab: Lab) -> None:
    with victim(lab, 2) as (proc, child), victim(lab, 3) as (bystander, bystander_child):
        spec = PodKill()
        message = faults.get("pod-kill").apply(ctx_for("kill", [proc.pid], spec), spec)
        assert message == "killed 2 processes in 1 container(s)"
        assert not procs.process_alive(proc.pid) and not procs.process_alive(child)
        assert procs.process_alive(bystander.pid) and procs.process_alive(bystander_child)
        assert all(pod.server.poll() is None for pod in lab.pods)
        again = ctx_for("kill", [proc.pid], spec)
        assert faults.get("pod-kill").apply(again, spec).startswith("target gone")
        assert "nothing to recover" in faults.get("pod-kill").recover(again, spec)


def test_container_kill_kills_every_container_it_is_given(lab: Lab) -> None:
    with victim(lab, 1) as (first, child), victim(lab, 1) as (second, _), victim(lab, 1) as (spared, _):
        spec = ContainerKill(container_names=["a", "b"])
        message = faults.get("container-kill").apply(ctx_for("ck", [first.pid, second.pid], spec), spec)
        assert message == "killed 4 processes in 2 container(s)"
        assert not procs.process_alive(child) and procs.process_alive(spared.pid)


def test_hello_world_lists_the_target_process(lab: Lab) -> None:
    pod, spec = lab.pods[1], HelloWorld()
    message = faults.get("hello-world").apply(ctx_for("hello", [pod.server.pid], spec), spec)
    assert f"ps aux in the namespaces of pid {pod.server.pid} lists" in message
    target_line = message.split("the target: ", 1)[1]
    assert target_line.split()[1] == str(pod.server.pid) and "import selectors" in target_line


def test_unsupported_runtime_is_a_clear_error() -> None:
    with pytest.raises(runtime.UnsupportedRuntime, match="unknown container runtime 'rkt'"):
        runtime.resolve("rkt://0123abcd")


# --- pod networking ---------------------------------------------------------------------------


def test_pod_network_is_idempotent_and_repairs_partial_state(lab: Lab) -> None:
    name = f"{lab.bridge}-px"
    ip, gw = f"{lab.subnet.network_address + 99}/24", str(lab.subnet.network_address + 1)
    try:
        net = podnet.create_pod_network(name, lab.bridge, ip, gw)
        assert podnet.create_pod_network(name, lab.bridge, ip, gw) == net
        from pyroute2 import IPRoute

        with IPRoute() as ipr:  # a crash left the netns but lost the veth
            ipr.link("del", index=ipr.link_lookup(ifname=net.host_ifname)[0])

        async def from_a_loop() -> podnet.PodNetwork:
            return podnet.create_pod_network(name, lab.bridge, ip, gw)

        assert asyncio.run(from_a_loop()) == net
        assert podnet.delete_bridge_if_unused(lab.bridge) is False  # still in use
        server = lab.spawn(0, [sys.executable, "-c", "print('x')"])
        server.communicate(timeout=5)
        probe = podnet.spawn_in_netns(
            [
                sys.executable,
                "-c",
                f"import socket; socket.create_connection(('{lab.pods[0].ip}', 8080), timeout=1).close()",
            ],
            name,
        )
        assert probe.wait(timeout=5) == 0
    finally:
        assert podnet.delete_pod_network(name) is True
    assert podnet.delete_pod_network(name) is False


def test_failed_pod_network_leaves_nothing_behind(lab: Lab) -> None:
    from pyroute2 import IPRoute

    not_a_bridge, name = f"{lab.bridge}d", f"{lab.bridge}-pf"
    with IPRoute() as ipr:
        ipr.link("add", ifname=not_a_bridge, kind="veth", peer={"ifname": f"{lab.bridge}e"})
    try:
        with pytest.raises(Exception, match="(?i)not supported|operation"):
            podnet.create_pod_network(
                name, not_a_bridge, f"{lab.subnet.network_address + 97}/24", str(lab.subnet.network_address + 1)
            )
        assert not os.path.exists(nsutil.netns_path(name))
        with IPRoute() as ipr:
            assert ipr.link_lookup(ifname=podnet.host_ifname(name)) == []
    finally:
        with IPRoute() as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname=not_a_bridge)[0])
