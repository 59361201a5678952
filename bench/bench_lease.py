"""What signing adds on the node's side of one apply, and what sending the lease ahead of the
command cost: a real nats-server and three node injectors in this process (the NATS edge, the
node, a journal on disk, the real partition fault through libnftables on one target netns).

`python -m bench.bench_lease [--runs 100] [--dir /var/tmp]` (root). Each run sends a new
experiment's apply to each injector in turn, in one of three ways, then its recover:

- **unsigned, lease inside**: `CHAOSBUS_UNSIGNED` as the bench's `security.apply` runs it;
- **signed, lease inside**: as the scheduler sends it now (`NodeCommand.lease`, one envelope);
- **signed, lease ahead**: as it sent it before, a signed lease on `chaos.lease.<node>` just ahead of
  the signed command, which the node checks and journals first.

Timed from the harness's first publish to the effect's return on the node (its nft transaction
committed), p50 and p99 per way; the ways take turns run by run, each first, second and last in
turn, so the load and the order fall on all alike.
The harness plays the scheduler: what it sends is what `Outbox` sends, sealed with the same code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.bench_node import command, pct, with_target
from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, signing, subjects
from chaosbus.injector import faults
from chaosbus.injector.app import Edge
from chaosbus.injector.backends.kit import process_backends
from chaosbus.injector.executor import Executor
from chaosbus.injector.journal import Journal
from chaosbus.injector.metrics import InjectorMetrics
from chaosbus.injector.node import Node

WAYS = ("unsigned, lease inside", "signed, lease inside", "signed, lease ahead")
TTL_S = 300.0


class Way:
    def __init__(self, index: int, workdir: Path, signer: signing.Signer, trust: signing.Trust) -> None:
        self.name = f"bench-lease-{index}"
        self.signed = WAYS[index] != WAYS[0]
        self.ahead = WAYS[index] == WAYS[2]
        self.signer = signer
        journal = Journal(workdir / f"{self.name}.db")
        self.node = Node(journal, Executor(journal, self.name, registry=dict(faults.REGISTRY)))
        self.edge = Edge(self.node, self.name, InjectorMetrics(), trust=trust if self.signed else None)
        self.effect_at: list[float] = []
        self.node.on_effect = self._stamp

    def _stamp(self, action: m.TargetAction, result: m.TargetResult, seconds: float) -> None:
        if action.op == "apply":
            self.effect_at.append(time.time())

    def lease(self, uid: str) -> m.NodeLease:
        return m.NodeLease(node=self.name, holder="bench", issued_at=time.time(), ttl_s=15.0, held=[uid])

    def seal(self, subject: str, msg: m.Message) -> bytes:
        return self.signer.seal_message(subject, msg, ttl_s=TTL_S) if self.signed else busmod.encode(msg)

    async def send(self, bus: busmod.Bus, cmd: m.NodeCommand) -> None:
        subject = subjects.command_subject(self.name)
        if self.ahead:
            lease_subject = subjects.lease_subject(self.name)
            await bus.nc.publish(lease_subject, self.seal(lease_subject, self.lease(cmd.experiment_uid)))
        elif any(a.op == "apply" for a in cmd.actions):
            cmd = msgspec.structs.replace(cmd, lease=self.lease(cmd.experiment_uid))
        await bus.js.publish(subject, self.seal(subject, cmd), headers={"Nats-Msg-Id": cmd.command_id})

    async def once(self, bus: busmod.Bus, uid: str, pid: int) -> float:
        """One apply, first publish -> in effect on the node, in seconds; then its recover, done."""
        self.effect_at.clear()
        start = time.time()
        await self.send(bus, msgspec.structs.replace(command(uid, "apply", pid), node=self.name))
        await until(lambda: self.effect_at)
        took = self.effect_at[0] - start
        before = len(self.node.journal.open_entries())
        await self.send(bus, msgspec.structs.replace(command(uid, "recover", pid), node=self.name))
        await until(lambda: len(self.node.journal.open_entries()) < before)
        return took


async def until(check: Callable[[], object], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the node did not act within 10 s")
        await asyncio.sleep(0.0005)


async def measure(runs: int, workdir: Path, pid: int) -> dict[str, list[float]]:
    key = Ed25519PrivateKey.generate()
    signer = signing.Signer(key)
    trust = signing.Trust.of([signing.TrustedKey(signer.kid, "scheduler", key.public_key())])
    server = natsserver.start(workdir / "nats", port=0)
    ways = [Way(i, workdir, signer, trust) for i in range(len(WAYS))]
    tasks = [asyncio.ensure_future(w.edge.run(server.url)) for w in ways]
    bus = await busmod.connect(server.url, "bench-lease")
    out: dict[str, list[float]] = {w: [] for w in WAYS}
    try:
        await bus.ensure()
        for i in range(runs + 5):  # the first five warm up (consumers, contexts), not counted
            for k in range(len(ways)):  # each way first, second and last in turn
                n = (i + k) % len(ways)
                took = await ways[n].once(bus, f"bench-lease-{i}-{n}", pid)
                if i >= 5:
                    out[WAYS[n]].append(took)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=5)
        await bus.close()
        for w in ways:
            w.node.close()
            w.node.journal.close()
        server.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100, help="applies per way (default 100)")
    ap.add_argument("--dir", default="/var/tmp", help="where the journals go (a disk, as deployed)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_lease needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    if process_backends().nft.contexts is None:
        print("libnftables is not usable here: nothing to measure", file=sys.stderr)
        return 2
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="cbblease-") as d:
        results = with_target(lambda pid: asyncio.run(measure(args.runs, Path(d), pid)))
    print(
        f"one target, first publish -> in effect on the node; load average {load} -> "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    base = pct(results[WAYS[0]], 0.5)
    print(f"{'way':28s} {'p50':>9s} {'p99':>9s}  p50 / unsigned")
    for way in WAYS:
        v = results[way]
        print(f"{way:28s} {pct(v, 0.5) * 1e3:7.2f} ms {pct(v, 0.99) * 1e3:7.2f} ms  {pct(v, 0.5) / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
