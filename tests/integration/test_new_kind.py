"""A kind registered in this file alone (its spec model, its descriptor, its fault planner and a
fake fault module in the injector) flows through every service on a real nats-server, in-process:
`chaosbus apply` admits it, the watcher publishes it, the scheduler selects its targets and plans
their faults, the injector runs the fake fault, the recorder writes Chaos Mesh's status, and a
delete recovers it before the object goes. No other file knows the kind.

The fault travels as an existing FaultSpec (`hello-world`): node commands carry a tagged union
that msgspec resolves once per process, so a new fault spec is declared in `faultspecs.py` (see
docs/architecture.md, "Adding a fault kind"); the fault module that performs it here is this
file's own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest
from helpers.signing import TRUST, write_keys

from chaosbus.cli import resources
from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, subjects
from chaosbus.common.crd import kinds
from chaosbus.common.crd.common import ContainerSelectorBase, with_default_namespace
from chaosbus.common.crd.errors import Problems
from chaosbus.common.faultplan import Selected
from chaosbus.common.store import ObjectStore
from chaosbus.injector import faults, runtime
from chaosbus.injector.app import Edge
from chaosbus.injector.executor import Executor
from chaosbus.injector.journal import Journal
from chaosbus.injector.metrics import InjectorMetrics
from chaosbus.injector.node import Node
from chaosbus.recorder import app as recorder_app
from chaosbus.scheduler import app as scheduler_app
from chaosbus.watcher import app as watcher_app

pytestmark = pytest.mark.integration


class GreetChaosSpec(ContainerSelectorBase, kw_only=True):
    greeting: str = "hello"

    def validate(self) -> None:
        problems = Problems()
        self.check_common(problems)
        if not self.greeting:
            problems.add("spec.greeting", "required")
        problems.raise_if_any()

    def defaulted(self, namespace: str) -> Self:
        return with_default_namespace(self, namespace)  # type: ignore[return-value]


def greet_faults(obj: Any, target: Selected, everyone: list[Selected]) -> m.Fault:
    return m.HelloWorld(container_names=[target.container.name] if target.container else [])


class FakeGreeting:
    """The kind's fault module: remembers what it did to whom."""

    name = "hello-world"

    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []

    def apply(self, ctx: faults.FaultContext, spec: m.FaultSpec) -> str:
        self.done.append(("apply", ctx.action.target_id))
        return "greeted"

    def recover(self, ctx: faults.FaultContext, spec: m.FaultSpec) -> str:
        self.done.append(("recover", ctx.action.target_id))
        return "ungreeted"


@pytest.fixture
def greet_kind() -> Iterator[kinds.Kind]:
    kind = kinds.register(
        kinds.Kind(
            "GreetChaos",
            GreetChaosSpec,
            "executed",
            ("grc",),
            default=kinds.Action(containers=True),
            fault_tags=("hello-world",),
            faults=greet_faults,
        )
    )
    yield kind
    kinds.unregister(kind.kind)


def no_runtime(container_id: str) -> runtime.ContainerHandle:
    """The fake fault touches no process: nothing to resolve."""
    return runtime.ContainerHandle(container_id=container_id, pid=0, netns_path="", mnt_ns_path="", alive=False)


@pytest.fixture
async def services(
    tmp_path: Path, nats_server: natsserver.EmbeddedServer, greet_kind: kinds.Kind
) -> AsyncIterator[FakeGreeting]:
    """Watcher, scheduler and recorder as their services run them; the injector's edge and node
    with the fake fault as its whole registry.
    """
    url = nats_server.url
    common = {"nats": url, "metrics_port": 0, "metrics_addr": "127.0.0.1"}
    fake = FakeGreeting()
    journal = Journal(tmp_path / "journal.db")
    node = Node(journal, Executor(journal, "n1", registry={fake.name: fake}, resolve=no_runtime))
    runs: list[Awaitable[None]] = [
        watcher_app.main(argparse.Namespace(**common)),
        scheduler_app.main(
            argparse.Namespace(
                **common,
                target_namespace="",
                enable_filter_namespace=False,
                protected_namespaces=None,
                allow_host_network_testing=False,
                max_targets=100,
                instance="test",
                leader_ttl=5.0,
                cluster_injector=False,
                signing_key=str(write_keys(tmp_path / "keys") / "scheduler.key"),
                command_ttl=300.0,
            )
        ),
        recorder_app.main(argparse.Namespace(**common)),
        node.watchdog(),
        Edge(node, "n1", InjectorMetrics(), trust=TRUST).run(url),
    ]
    tasks = [asyncio.ensure_future(r) for r in runs]
    try:
        yield fake
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=10)
        node.close()
        journal.close()


async def eventually(check: Callable[[], Awaitable[Any]], what: str, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


GREET = """
apiVersion: chaos-mesh.org/v1alpha1
kind: GreetChaos
metadata: {name: hi}
spec: {mode: all, selector: {labelSelectors: {app: web}}, containerNames: [main]}
"""


async def test_a_kind_declared_in_one_file_runs_end_to_end(services: FakeGreeting, bus: busmod.Bus) -> None:
    store = ObjectStore(await bus.bucket(subjects.OBJECT_STORE))
    for name in ("web-0", "web-1"):
        await store.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "main"}]},
                "status": {
                    "phase": "Running",
                    "podIP": "10.9.0.1",
                    "containerStatuses": [{"name": "main", "ready": True, "containerID": f"process://{name}"}],
                },
            }
        )
    assert await resources.apply(store, GREET, None) == ["greetchaos.chaos-mesh.org/hi created"]

    async def running() -> dict[str, Any] | None:
        obj = await store.get("GreetChaos", "default", "hi")
        status = (obj or {}).get("status") or {}
        return obj if status.get("phase") == "Running" else None

    obj = await eventually(running, "GreetChaos/hi Running")
    records = obj["status"]["experiment"]["containerRecords"]
    assert sorted((r["id"], r["phase"]) for r in records) == [
        ("default/web-0/main", "Injected"),
        ("default/web-1/main", "Injected"),
    ]
    assert sorted(services.done) == [("apply", "default/web-0/main"), ("apply", "default/web-1/main")]
    assert obj["metadata"]["finalizers"] == ["chaos-mesh/records"]

    with contextlib.suppress(resources.UsageError):
        await resources.delete(store, "GreetChaos", "hi", "default", wait=20.0)

    async def gone() -> bool:
        return await store.get("GreetChaos", "default", "hi") is None

    await eventually(gone, "GreetChaos/hi removed after its targets recovered")
    assert sorted(d for d in services.done if d[0] == "recover") == [
        ("recover", "default/web-0/main"),
        ("recover", "default/web-1/main"),
    ]
