"""Builders shared by the injector's tests: journal entries, a recording fault over a dict
"kernel", nodes over a real journal, commands, and an async `eventually`."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chaosbus.common import messages as m
from chaosbus.injector import faults
from chaosbus.injector import journal as jr
from chaosbus.injector.executor import Executor
from chaosbus.injector.journal import Entry, Identity, Journal, NetnsRef, ProcRef
from chaosbus.injector.node import Node

UID = "exp-1"


def entry(
    key: str = "u1|.|ns/p",
    state: str = jr.APPLYING,
    *,
    uid: str = "u1",
    deadline: float | None = 100.0,
    lasting: bool = True,
    generation: int = 1,
) -> Entry:
    action = m.TargetAction(
        target_id="ns/p",
        op="apply",
        pod_uid="pod-uid",
        container_ids=["process://42"],
        fault=m.Partition(rules=[m.PartitionRule(chain="output", peers=["10.0.0.2"])]),
    )
    return Entry(
        key=key,
        experiment_uid=uid,
        generation=generation,
        kind="NetworkChaos",
        namespace="ns",
        name="x",
        action=action,
        identity=Identity(
            pod_uid="pod-uid", netns=(NetnsRef("/var/run/netns/a", 7),), processes=(ProcRef("process://42", 42, 12.5),)
        ),
        original={"nft_table_absent": "chaosbus_abc"},
        deadline=deadline,
        lasting=lasting,
        state=state,
        command_id="c1",
    )


class Recording:
    """A lasting fault whose effect is an entry in `kernel`, keyed by (experiment, side, netns)."""

    name = "partition"

    def __init__(self) -> None:
        self.kernel: dict[tuple[str, str, str], int] = {}
        self.applies = 0

    def apply(self, ctx: faults.FaultContext, spec: m.FaultSpec) -> str:
        live = ctx.alive()
        if not live:
            raise faults.FaultError("target gone: no live container", retryable=False)
        self.applies += 1
        for c in live:
            self.kernel[(ctx.experiment_uid, ctx.action.selector_key, c.netns_path)] = self.applies
        return "applied"

    def recover(self, ctx: faults.FaultContext, spec: m.FaultSpec) -> str:
        for key in [k for k in self.kernel if k[:2] == (ctx.experiment_uid, ctx.action.selector_key)]:
            del self.kernel[key]
        return "removed"


class Kill:
    name = "pod-kill"
    one_shot = True

    def __init__(self) -> None:
        self.kills = 0

    def apply(self, ctx: faults.FaultContext, spec: m.FaultSpec) -> str:
        self.kills += 1
        return "killed"

    def recover(self, ctx: faults.FaultContext, spec: m.FaultSpec) -> str:
        return "one-shot"


def make_node(tmp_path: Path, fault: Recording, *, lease_ttl: float = 15.0, kill: Kill | None = None) -> Node:
    journal = Journal(tmp_path / "journal.db")
    registry: dict[str, faults.Fault] = {}
    faults.register(fault, registry)
    faults.register(kill or Kill(), registry)
    return Node(journal, Executor(journal, "n1", registry=registry), lease_ttl=lease_ttl)


async def stop(n: Node) -> None:
    n.close()
    n.journal.close()


def command(
    proc: subprocess.Popen[bytes],
    *,
    op: str = "apply",
    deadline: float | None = None,
    uid: str = UID,
    command_id: str | None = None,
    spec: m.Fault | None = None,
) -> m.NodeCommand:
    action = m.TargetAction(
        target_id="ns/p",
        op=op,
        pod_uid="pod-uid",  # type: ignore[arg-type]
        container_ids=[f"process://{proc.pid}"],
        fault=spec or m.Partition(),
    )
    return m.NodeCommand(
        command_id=command_id or f"{uid}.{op}.{time.monotonic_ns()}",
        experiment_uid=uid,
        generation=1,
        kind="NetworkChaos",
        namespace="ns",
        name="x",
        node="n1",
        issued_at=time.time(),
        deadline=deadline,
        actions=[action],
    )


async def eventually(check: Callable[[], Awaitable[Any]] | Callable[[], Any], within: float = 5.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() > deadline:
            assert value, f"condition not met within {within}s"
            return value
        await asyncio.sleep(0.02)
