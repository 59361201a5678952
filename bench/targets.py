"""Lightweight target pods made by the harness: a named netns per target holding one small process,
registered as a Pod in the `objects` KV bucket, as `chaosbus pod run` would (without veth, address
or supervisor, which partition timing does not need).

The process is `cat` reading a pipe from the harness: zero CPU while it waits, and it exits by
itself when the harness dies (its stdin closes), so even a killed harness leaves no process behind.
Netns names carry the harness pid (`cbb<pid>-<i>`): a later run removes those of dead harnesses.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chaosbus.cli import podnet
from chaosbus.common import netns as nsu
from chaosbus.common.store import ObjectStore

NAMESPACE = "bench"
GROUP_LABEL = "bench.chaosbus.io/g{size}"  # "y" on the first `size` pods
POD_LABEL = "bench.chaosbus.io/pod"  # the pod's index: selects exactly one pod
PREFIX = "cbb"
_STALE = re.compile(rf"^{PREFIX}(\d+)-\w+$")


@dataclass
class Target:
    index: int
    name: str
    node: str
    netns: str  # path
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


def netns_prefix() -> str:
    return f"{PREFIX}{os.getpid()}-"


def remove_stale() -> list[str]:
    """Remove netns left by harness runs whose process is gone (a SIGKILLed run); returns them."""
    removed = []
    for name in sorted(os.listdir(nsu.NETNS_RUN_DIR)) if os.path.isdir(nsu.NETNS_RUN_DIR) else []:
        match = _STALE.match(name)
        if match and not alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                nsu.remove_named_netns(name)
                removed.append(name)
    return removed


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _make_one(index: int, node: str) -> Target:
    name = f"{netns_prefix()}{index}"
    path = nsu.create_named_netns(name)
    try:
        proc = podnet.spawn_in_netns(
            ["cat"], path, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    except BaseException:
        nsu.remove_named_netns(name)
        raise
    return Target(index, f"t{index}", node, path, proc)


def create(count: int, nodes: list[str], workers: int = 8) -> list[Target]:
    """`count` targets, target i on node i % len(nodes); all or nothing."""
    made: list[Target] = []
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_make_one, i, nodes[i % len(nodes)]) for i in range(count)]
        error: BaseException | None = None
        for f in futures:
            try:
                made.append(f.result())
            except BaseException as e:  # collect the rest, then clean up and re-raise
                error = error or e
    if error is not None:
        destroy(made)
        raise error
    return made


def destroy(targets: list[Target]) -> list[str]:
    """Stop every target's process and remove its netns; returns what could not be removed."""
    problems = []
    for t in targets:
        with contextlib.suppress(OSError):
            if t.proc.stdin is not None:
                t.proc.stdin.close()
        if t.proc.poll() is None:
            t.proc.kill()
    for t in targets:
        try:
            t.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            problems.append(f"process {t.pid}")
        try:
            nsu.remove_named_netns(os.path.basename(t.netns))
        except OSError as e:
            problems.append(f"netns {t.netns}: {e}")
    return problems


def pod_object(t: Target, sizes: list[int]) -> dict[str, Any]:
    """The Pod as a kubelet (or `chaosbus pod run`) would register it (cli/supervisor.pod_object)."""
    labels = {POD_LABEL: str(t.index), "app": "bench"}
    labels.update({GROUP_LABEL.format(size=s): "y" for s in sizes if t.index < s})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": t.name,
            "namespace": NAMESPACE,
            "labels": labels,
            "annotations": {"chaosbus.io/netns": t.netns},
        },
        "spec": {"nodeName": t.node, "restartPolicy": "Always", "containers": [{"name": "main", "command": ["cat"]}]},
        "status": {
            "phase": "Running",
            "podIP": "",
            "hostIP": "",
            "containerStatuses": [
                {
                    "name": "main",
                    "ready": True,
                    "restartCount": 0,
                    "containerID": f"process://{t.pid}",
                    "state": {"running": {}},
                }
            ],
        },
    }


async def register(store: ObjectStore, targets: list[Target], sizes: list[int]) -> None:
    """The bench namespace and one Pod per target in the object store."""
    await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for t in targets:
        await store.create(pod_object(t, sizes))


async def unregister(store: ObjectStore, targets: list[Target]) -> None:
    for t in targets:
        with contextlib.suppress(Exception):
            await store.delete("Pod", NAMESPACE, t.name)
    with contextlib.suppress(Exception):
        await store.delete("Namespace", "", NAMESPACE)
