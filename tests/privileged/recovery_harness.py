"""A harness for recovery tests: bare targets (a named netns with a process inside, nothing
else), real injector processes (`python -m chaosbus.injector`, each with its own journal),
commands published as the scheduler would, and a kernel-level view of what is in force.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.signing import publish_command, write_keys

from chaosbus.cli import podnet
from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, subjects
from chaosbus.common import netns as nsutil
from chaosbus.injector.backends import nft
from chaosbus.injector.faults.partition import table_name


@dataclass
class Target:
    netns: str
    proc: subprocess.Popen[bytes]
    node: str

    @property
    def path(self) -> str:
        return nsutil.netns_path(self.netns)

    @property
    def container_id(self) -> str:
        return f"process://{self.proc.pid}"

    def tables(self) -> set[str]:
        try:
            return {t for t in nft.list_tables(self.path) if t.startswith(nft.TABLE_PREFIX)}
        except nft.NetnsGone:
            return set()


@dataclass
class Injector:
    node: str
    journal: Path
    log: Path
    lease_s: float
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    launches: int = 0  # processes started: a wait for "ready" counts this many in the log

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except OSError:
            return ""


@dataclass
class Harness:
    tmp: Path
    server: natsserver.EmbeddedServer
    tag: str = field(default_factory=lambda: f"{random.getrandbits(20):05x}")
    targets: list[Target] = field(default_factory=list)
    injectors: dict[str, Injector] = field(default_factory=dict)

    # --- targets --------------------------------------------------------------------------------

    def add_target(self, node: str) -> Target:
        name = f"cbtr{self.tag}-{len(self.targets)}"
        nsutil.create_named_netns(name)
        proc = podnet.spawn_in_netns(["sleep", "3600"], name)
        t = Target(name, proc, node)
        self.targets.append(t)
        return t

    def all_tables(self) -> dict[str, set[str]]:
        return {t.netns: t.tables() for t in self.targets}

    def in_force(self) -> int:
        return sum(len(v) for v in self.all_tables().values())

    # --- injectors ------------------------------------------------------------------------------

    def start_injector(self, node: str, *, lease_s: float = 15.0, sweep_interval: float = 30.0) -> Injector:
        inj = self.injectors.get(node) or Injector(
            node, self.tmp / f"journal-{node}.db", self.tmp / f"{node}.log", lease_s
        )
        inj.lease_s = lease_s
        argv = [
            sys.executable,
            "-m",
            "chaosbus.injector",
            "--nats",
            self.server.url,
            "--node",
            node,
            "--journal",
            str(inj.journal),
            "--metrics-port",
            "0",
            "--lease-seconds",
            str(lease_s),
            "--sweep-interval",
            str(sweep_interval),
        ]
        env = {**os.environ, "CHAOSBUS_KEYS_DIR": str(self.keys())}
        with open(inj.log, "ab") as out:
            inj.proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True, env=env)
        inj.started = time.monotonic()
        inj.launches += 1
        self.injectors[node] = inj
        return inj

    def keys(self) -> Path:
        """The test session's keys as files: injectors trust them, `chaosbus halt` signs with them."""
        return write_keys(self.tmp / "keys")

    def kill_injector(self, node: str) -> None:
        inj = self.injectors[node]
        if inj.proc is not None and inj.proc.poll() is None:
            os.kill(inj.proc.pid, signal.SIGKILL)
            inj.proc.wait()

    def wait_ready(self, node: str, timeout: float = 15.0) -> None:
        inj = self.injectors[node]
        wait_for(lambda: inj.log_text().count('"injector ready"') >= _starts(inj), timeout, f"injector {node} ready")

    def wait_reconciled(self, node: str, timeout: float = 15.0) -> None:
        inj = self.injectors[node]
        wait_for(
            lambda: inj.log_text().count('"journal reconciled"') >= _starts(inj), timeout, f"injector {node} reconciled"
        )

    # --- NATS side: commands, leases, results ----------------------------------------------------

    def restart_server(self) -> None:
        self.server = natsserver.start(self.server.store_dir, port=self.server.port)

    def kill_server(self) -> None:
        if self.server.process.poll() is None:
            os.kill(self.server.process.pid, signal.SIGKILL)
            self.server.process.wait()

    def stop(self) -> None:
        for node in list(self.injectors):
            self.kill_injector(node)
        for t in self.targets:
            with contextlib.suppress(ProcessLookupError):
                t.proc.kill()
            t.proc.wait()
            nsutil.remove_named_netns(t.netns)
        self.server.stop()


def _starts(inj: Injector) -> int:
    """Launches so far: counting the log's "injector starting" lines instead let a wait return
    before a slow new process had written its first line.
    """
    return inj.launches


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)


def partition_command(
    uid: str, node: str, targets: list[Target], *, deadline: float | None, op: str = "apply", peer: str = "192.0.2.1"
) -> m.NodeCommand:
    actions = [
        m.TargetAction(
            target_id=f"default/{t.netns}",
            op=op,
            pod_uid=f"uid-{t.netns}",  # type: ignore[arg-type]
            namespace="default",
            pod_name=t.netns,
            container_ids=[t.container_id],
            fault=m.Partition(rules=[m.PartitionRule(chain="output", peers=[peer])]),
        )
        for t in targets
    ]
    return m.NodeCommand(
        command_id=f"{uid}.{uuid.uuid4().hex[:8]}",
        experiment_uid=uid,
        generation=1,
        kind="NetworkChaos",
        namespace="default",
        name=uid,
        node=node,
        issued_at=time.time(),
        deadline=deadline,
        actions=actions,
    )


def table_of(uid: str) -> str:
    return table_name(uid, ".")


async def publish(bus: busmod.Bus, cmd: m.NodeCommand) -> None:
    await publish_command(bus, cmd)


async def results(bus: busmod.Bus) -> list[m.ResultBatch]:
    """Every result batch in the stream so far (read without a durable consumer)."""
    info = await bus.js.stream_info(subjects.RESULTS.name)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(Exception):
            raw = await bus.js.get_msg(subjects.RESULTS.name, seq)
            out.append(busmod.decode(raw.data or b"", m.ResultBatch))
    return out


@contextlib.contextmanager
def harness(tmp: Path) -> Iterator[Harness]:
    h = Harness(tmp, natsserver.start(tmp / "nats", port=0))
    try:
        yield h
    finally:
        h.stop()
