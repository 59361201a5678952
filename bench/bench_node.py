"""The node's own share of apply -> in effect, one target, without NATS or the other services.

`python -m bench.bench_node [--runs 200] [--dir /var/tmp]` (root). One netns holding a `sleep`
process, a node injector's machinery in this process (a `Node` over a real journal on disk, fsynced
as deployed, and the real partition fault through libnftables), and one partition experiment after
another on that target, each a new experiment as the scheduler would send it: apply, then recover.
Timed from the command handed to the node (`Node.on_command`, as the NATS edge does once the
command is decoded and its signature checked) to the moment its nft transaction has returned
(the kernel has committed the table), and to the command's results journaled.

Three ways are run interleaved, run by run, so that the machine's load falls on all of them alike:

- **as deployed**: the netns's libnftables context kept ready between experiments, and the
  intent of a partition journaled without an fsync of its own (it ends with the machine);
- **fresh context**: the context let go before each apply, as it was with every table's last delete
  (a thread entering the netns, `nft_ctx_new`, a first command);
- **fresh context, fsynced intent**: also the intent fsynced on its own (a fault module without
  `ends_with_machine`), what every apply paid before.

Nothing is left behind: the netns, the process and the journal go even when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaosbus.common import messages as m
from chaosbus.common import netns as nsutil
from chaosbus.injector import faults
from chaosbus.injector.backends.kit import process_backends
from chaosbus.injector.executor import Executor
from chaosbus.injector.faults import partition
from chaosbus.injector.journal import Journal
from chaosbus.injector.node import Node

WAYS = ("as deployed", "fresh context", "fresh context, fsynced intent")


class FsyncedPartition:
    """The partition fault as it was declared before `ends_with_machine`: same effect, own fsync."""

    name = "partition"
    batched = True
    orphans = None

    def __init__(self) -> None:
        self.inner = partition.PartitionFault()

    def original_state(
        self, experiment_uid: str, action: m.TargetAction, containers: object = (), backends: object = None
    ) -> dict[str, Any]:
        return self.inner.original_state(experiment_uid, action, containers, backends)

    def apply(self, ctx: faults.FaultContext, spec: m.FaultSpec) -> str:
        return self.inner.apply(ctx, spec)

    def recover(self, ctx: faults.FaultContext, spec: m.FaultSpec) -> str:
        return self.inner.recover(ctx, spec)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def command(
    uid: str,
    op: str,
    pid: int,
    *,
    node: str = "bench-node",
    pod: str = "",
    pod_uid: str = "pod-uid",
) -> m.NodeCommand:
    """One partition command for the process `pid`; `pod`: the target's pod name in namespace
    bench (none: the bare node target)."""
    action = m.TargetAction(
        target_id=f"bench/{pod or 'node-target'}",
        op=op,  # type: ignore[arg-type]
        pod_uid=pod_uid,
        namespace="bench" if pod else "",
        pod_name=pod,
        container_ids=[f"process://{pid}"],
        fault=m.Partition(rules=[m.PartitionRule(chain="output", external=["192.0.2.0/24"])]),
    )
    return m.NodeCommand(
        command_id=f"{uid}.{op}",
        experiment_uid=uid,
        generation=1,
        kind="NetworkChaos",
        namespace="bench",
        name=uid,
        node=node,
        issued_at=time.time(),
        deadline=time.time() + 3600,
        actions=[action],
    )


def make_node(path: Path, registry: dict[str, faults.Fault]) -> Node:
    journal = Journal(path)
    return Node(journal, Executor(journal, "bench-node", registry=registry))


async def one_run(node: Node, uid: str, pid: int, effect_at: list[float]) -> tuple[float, float]:
    """(command -> in effect, command -> results journaled) of one apply, in seconds; then its recover."""
    effect_at.clear()
    start = time.perf_counter()
    batch = await node.on_command(command(uid, "apply", pid))
    done = time.perf_counter()
    assert batch is not None and batch.results[0].ok, batch
    in_effect = effect_at[0] - start
    recovered = await node.on_command(command(uid, "recover", pid))
    assert recovered is not None and recovered.results[0].ok, recovered
    return in_effect, done - start


async def measure(runs: int, workdir: Path, pid: int) -> dict[str, tuple[list[float], list[float]]]:
    deployed = dict(faults.REGISTRY)
    fsynced: dict[str, faults.Fault] = {}
    faults.register(FsyncedPartition(), fsynced)
    nodes = {
        WAYS[0]: make_node(workdir / "deployed.db", deployed),
        WAYS[1]: make_node(workdir / "fresh.db", deployed),
        WAYS[2]: make_node(workdir / "fsynced.db", fsynced),
    }
    effect_at: list[float] = []

    def stamp(action: m.TargetAction, result: m.TargetResult, seconds: float) -> None:
        if action.op == "apply":
            effect_at.append(time.perf_counter())

    for node in nodes.values():
        node.on_effect = stamp
    contexts = process_backends().nft.contexts
    out: dict[str, tuple[list[float], list[float]]] = {w: ([], []) for w in WAYS}
    try:
        for i in range(runs + 5):  # the first five warm up (imports, caches), not counted
            for way, node in nodes.items():
                if way != WAYS[0] and contexts is not None:
                    contexts.forget_idle(now=time.monotonic() + 1e9)  # every idle context let go
                    contexts.settle()
                in_effect, journaled = await one_run(node, f"bench-{i}-{WAYS.index(way)}", pid, effect_at)
                if i >= 5:
                    out[way][0].append(in_effect)
                    out[way][1].append(journaled)
    finally:
        for node in nodes.values():
            node.close()
            node.journal.close()
    return out


def report(results: dict[str, tuple[list[float], list[float]]], load: str) -> None:
    print(f"one target, partition through libnftables; load average {load}")
    print(f"{'way':34s} {'-> in effect p50':>17s} {'p99':>9s} {'-> results journaled p50':>25s} {'p99':>9s}")
    for way, (effect, journaled) in results.items():
        print(
            f"{way:34s} {1000 * pct(effect, 0.5):14.2f} ms {1000 * pct(effect, 0.99):6.2f} ms"
            f" {1000 * pct(journaled, 0.5):22.2f} ms {1000 * pct(journaled, 0.99):6.2f} ms"
        )


def with_target(fn: Callable[[int], Any]) -> Any:
    name = f"cbbnode{os.getpid()}"
    path = nsutil.create_named_netns(name)
    proc = subprocess.Popen(["nsenter", f"--net={path}", "sleep", "3600"])
    try:
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{proc.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "the target process never entered its netns"
            time.sleep(0.01)
        return fn(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        nsutil.remove_named_netns(name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="applies per way (default 200)")
    ap.add_argument("--dir", default="/var/tmp", help="where the journals go (a disk, as deployed)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_node needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    if process_backends().nft.contexts is None:
        print("libnftables is not usable here: nothing to measure", file=sys.stderr)
        return 2
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="cbbnode-") as d:
        results = with_target(lambda pid: asyncio.run(measure(args.runs, Path(d), pid)))
    report(results, f"{load} -> {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
