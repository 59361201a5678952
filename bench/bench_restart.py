"""A restarted node injector's first apply in a network namespace, against its warm apply.

`python -m bench.bench_restart [--restarts 20] [--warm 5] [--idle 2] [--injectors 1] [--dir /var/tmp]`
(root).
A real nats-server and real node injectors (`python -m chaosbus.injector`, commands signed as the
scheduler signs them, a journal on disk each), stopped (SIGTERM, as a rollout or a service restart
stops them) and started again `--restarts` times; each time, once every injector's /readyz says
ready, per injector and in turn:

- **first**: the first partition apply of the new process, in a fresh netns it has never seen;
- **warm**: `--warm` applies in the first netns again (its libnftables context kept);
- **first in netns**: then an apply in another fresh netns (the process warm, the netns new);
- **after idle**: `--idle` more in the first netns, each after a random 0.05-1.5 s pause (a user's
  experiment reaching an idle injector, whose command consumer waits in 1 s fetch windows).

Each apply is a new experiment, timed from the harness's publish of its signed command to the
kernel's announcement of the committed table (an nfnetlink monitor socket in each target netns, as
`make bench` times apply -> in effect), and recovered before the next. Printed: p50 / p99 of each,
and first / warm at p50 and p99, warm measured in the same run. Target: first <= 2x warm at p50.
Nothing is left behind: the processes, the netns and the server go even when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench import kernel, targets
from bench.bench_node import command, pct
from bench.cluster import ROOT
from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, signing, subjects
from chaosbus.injector.faults.partition import table_name

KINDS = ("first", "first in netns", "warm", "after idle")
IDLE_S = (0.05, 1.5)
SLOW_S = 0.2  # an apply after an idle pause this late waited for a fetch window, not for work
TARGET_RATIO = 2.0  # first <= 2x warm at p50
TTL_S = 300.0
LIMIT_S = 20.0  # an apply not in effect by then fails the bench


@dataclass
class Injector:
    node: str
    journal: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self, url: str, keys: Path) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        argv = [sys.executable, "-m", "chaosbus.injector", "--nats", url, "--node", self.node]
        argv += ["--journal", str(self.journal), "--metrics-port", "0", "--keys-dir", str(keys)]
        env = {k: v for k, v in os.environ.items() if k != "CHAOSBUS_UNSIGNED"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self.port = 0
        self._offset = offset

    def ready(self) -> bool:
        """Whether /readyz says ready: connected, with the command consumer bound."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"injector {self.node} exited with {self.proc.returncode}; see {self.log}")
        if not self.port:
            with open(self.log, "rb") as f:
                f.seek(self._offset)
                for line in f:
                    if b'"injector starting"' in line:
                        self.port = int(json.loads(line)["metrics_port"])
            if not self.port:
                return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                return int(r.status) == 200
        except OSError:  # 503 (urllib's HTTPError is an OSError) or not served yet
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Bench:
    url: str
    signer: signing.Signer
    monitor: kernel.TableMonitor
    spare: list[targets.Target]  # fresh netns, two taken per injector and restart
    out: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    runs: int = 0

    def take(self) -> targets.Target:
        return self.spare.pop()

    def command(self, node: str, uid: str, op: str, target: targets.Target) -> m.NodeCommand:
        return command(uid, op, target.pid, node=node, pod=target.name, pod_uid=f"uid-{target.name}")

    async def send(self, bus: busmod.Bus, cmd: m.NodeCommand) -> None:
        subject = subjects.command_subject(cmd.node)
        sealed = self.signer.seal_message(subject, cmd, ttl_s=TTL_S)
        await bus.js.publish(subject, sealed, headers={"Nats-Msg-Id": cmd.command_id})

    async def once(self, bus: busmod.Bus, node: str, target: targets.Target) -> float:
        """One apply, publish -> table committed in the target's netns, in seconds; then its recover."""
        self.runs += 1
        uid = f"restart-{os.getpid()}-{self.runs}"
        table = table_name(uid, ".")
        start = time.time()
        await self.send(bus, self.command(node, uid, "apply", target))
        applied = await self.until(target.netns, table, True, start)
        start_recover = time.time()
        await self.send(bus, self.command(node, uid, "recover", target))
        await self.until(target.netns, table, False, start_recover)
        return applied - start

    async def until(self, path: str, table: str, present: bool, since: float) -> float:
        deadline = time.monotonic() + LIMIT_S
        while True:
            state, at = self.monitor.state(path, table)
            if state == present and at >= since:
                return at
            if time.monotonic() > deadline:
                raise TimeoutError(f"table {table} not {'present' if present else 'gone'} in {path} in {LIMIT_S}s")
            await asyncio.sleep(0.0005)


async def measure(b: Bench, injectors: list[Injector], keys: Path, restarts: int, warm: int, idle: int) -> None:
    bus = await busmod.connect(b.url, "bench-restart")
    try:
        await bus.ensure()
        for r in range(restarts):
            for inj in injectors:
                inj.stop()
            for inj in injectors:
                inj.start(b.url, keys)
            deadline = time.monotonic() + 60
            while not all(inj.ready() for inj in injectors):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"injectors not ready after 60 s; see {injectors[0].log.parent}")
                await asyncio.sleep(0.02)
            fresh = {inj.node: (b.take(), b.take()) for inj in injectors}
            for inj in injectors:
                first, other = fresh[inj.node]
                b.out["first"].append(await b.once(bus, inj.node, first))
                b.out["warm"] += [await b.once(bus, inj.node, first) for _ in range(warm)]
                b.out["first in netns"].append(await b.once(bus, inj.node, other))
                for _ in range(idle):
                    await asyncio.sleep(random.uniform(*IDLE_S))
                    b.out["after idle"].append(await b.once(bus, inj.node, first))
            print(f"restart {r + 1}/{restarts}: first {1e3 * b.out['first'][-1]:.2f} ms", flush=True)
    finally:
        await bus.close()


def report(out: dict[str, list[float]], injectors: int, load: str) -> dict[str, float]:
    """Prints the table; returns first / warm at p50 and p99."""
    print(f"\nfirst apply after an injector start vs warm, {injectors} injector(s) restarted; load average {load}")
    print(f"{'apply':16s} {'n':>4s} {'p50':>10s} {'p99':>10s} {'max':>10s}")
    for kind in (k for k in KINDS if out[k]):
        v = out[kind]
        print(f"{kind:16s} {len(v):4d} {1e3 * pct(v, 0.5):7.2f} ms {1e3 * pct(v, 0.99):7.2f} ms {1e3 * max(v):7.2f} ms")
    warm50, warm99 = pct(out["warm"], 0.5), pct(out["warm"], 0.99)
    ratios = {
        "first/warm p50": pct(out["first"], 0.5) / warm50,
        "first/warm p99": pct(out["first"], 0.99) / warm99,
        "first in netns/warm p50": pct(out["first in netns"], 0.5) / warm50,
    }
    for name, value in ratios.items():
        print(f"{name:24s} {value:5.2f}")
    if out["after idle"]:
        slow = sum(x > SLOW_S for x in out["after idle"])
        print(f"after idle over {SLOW_S:g} s: {slow} of {len(out['after idle'])}")
    verdict = "met" if ratios["first/warm p50"] <= TARGET_RATIO else "missed"
    print(f"target: first <= {TARGET_RATIO:g}x warm at p50: {verdict}")
    return ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--restarts", type=int, default=20, help="injector starts measured (default 20)")
    ap.add_argument("--warm", type=int, default=5, help="warm applies per injector and start (default 5)")
    ap.add_argument("--idle", type=int, default=2, help="applies after an idle pause, per start (default 2)")
    ap.add_argument("--injectors", type=int, default=1, help="injectors restarted together (default 1)")
    ap.add_argument("--dir", default="/var/tmp", help="where the journals go (a disk, as deployed)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_restart needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="cbbrestart-") as d:
        work = Path(d)
        keys = work / "keys"
        signing.ensure_keys(keys)
        server = natsserver.start(work / "nats", port=0)
        monitor = kernel.TableMonitor()
        nodes = [f"bench-restart-{i}" for i in range(args.injectors)]
        injectors = [Injector(n, work / f"{n}.db", work / f"{n}.log") for n in nodes]
        made: list[targets.Target] = []
        try:
            made = targets.create(2 * args.restarts * args.injectors, nodes)
            for t in made:
                monitor.watch(t.netns)
            monitor.start()
            b = Bench(server.url, signing.Signer.from_file(keys / "scheduler.key"), monitor, list(made))
            asyncio.run(measure(b, injectors, keys, args.restarts, args.warm, args.idle))
        finally:
            for inj in injectors:
                inj.stop()
            monitor.close()
            left = targets.destroy(made)
            server.stop()
    if left:
        print(f"LEFT BEHIND: {', '.join(left)}", file=sys.stderr)
        return 1
    report(b.out, args.injectors, f"{load} -> {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
