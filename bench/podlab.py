"""What the per-fault benches share: percentiles, and target processes in network namespaces of
their own (each a `sleep`, the netns's loopback up) with a fault context for each, so a fault
module is driven directly, without services or NATS.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from bench.report import pct
from chaosbus.cli import podnet
from chaosbus.common import netns as nsu
from chaosbus.common.messages import FaultSpec, TargetAction
from chaosbus.injector import faults, runtime

__all__ = ["fault_context", "ms", "netns_targets", "pct"]


def ms(values: list[float], digits: int = 3) -> str:
    return f"p50 {pct(values, 50) * 1e3:.{digits}f} ms, p99 {pct(values, 99) * 1e3:.{digits}f} ms"


@contextlib.contextmanager
def netns_targets(n: int, prefix: str) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """`n` (netns name, process) pairs, named `<prefix>-<i>`, removed on exit."""
    made: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for i in range(n):
            name = f"{prefix}-{i}"
            path = nsu.create_named_netns(name)
            proc = podnet.spawn_in_netns(["sleep", "3600"], name)
            made.append((name, proc))
            subprocess.run(["nsenter", f"--net={path}", "ip", "link", "set", "lo", "up"], check=True)
        yield made
    finally:
        for name, proc in made:
            proc.kill()
            proc.wait()
            nsu.remove_named_netns(name)


def fault_context(uid: str, pid: int, spec: FaultSpec) -> faults.FaultContext:
    """The context a node injector would build for one process target of experiment `uid`."""
    ids = [f"process://{pid}"]
    action = TargetAction(
        target_id=f"bench/{pid}",
        selector_key=".",
        op="apply",
        namespace="bench",
        pod_name=str(pid),
        container_ids=ids,
        fault=spec,
    )
    return faults.FaultContext(
        experiment_uid=uid,
        experiment_name=uid,
        namespace="bench",
        action=action,
        containers=[runtime.resolve(i) for i in ids],
    )
