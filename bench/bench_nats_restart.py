"""How long a service's NATS client takes to work again after nats-server is killed (SIGKILL) and
restarted on its port: a real nats-server (JetStream on disk) and one bus, as a service holds it.

`python -m bench.bench_nats_restart [--cycles 20]`. Each cycle kills the server and restarts it at
once, the event loop blocked meanwhile (as a busy service's is), so the client learns of the kill
only after the restart; then, timed from the restart (each kill comes 0.6 s after the last
reconnect, so nats-py's 0.5 s wait between attempts on one server is not in the figures):

- **publish acked**: a JetStream publish made right after the restart (it goes out on the dead
  connection; nats-py waited out 5 s for its ack before it was published again on the new one);
- **followers resumed**: an ordered replay and a KV follow, both running across the restart, have
  each seen a message written after it;
- **reader bound**: a durable pull consumer set up right after the restart is bound;
- **KV put acked**: a bucket put made right after the restart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, subjects

MEASURES = ("publish acked", "followers resumed", "reader bound", "KV put acked")
SETTLE_S = 0.6


class Server:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running = natsserver.start(folder)

    async def kill_and_restart(self) -> float:
        # A connection older than nats-py's reconnect wait (0.5 s), as a service's is: its first
        # reconnect attempt is made at once, not after that wait.
        await asyncio.sleep(SETTLE_S)
        os.kill(self.running.process.pid, signal.SIGKILL)
        self.running.process.wait()
        self.running = natsserver.start(self.folder, port=self.running.port)
        return time.monotonic()


async def until(check: Callable[[], bool], within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {within_s} s")
        await asyncio.sleep(0.005)


def event(name: str) -> m.ObjectEvent:
    return m.ObjectEvent(type="ADDED", kind="PodChaos", namespace="bench", name=name, uid=name)


def pod(name: str) -> m.TargetPod:
    return m.TargetPod(uid=name, namespace="bench", name=name, node="n1")


async def publish(b: busmod.Bus, name: str) -> None:
    await b.publish(subjects.OBJECTS, subjects.object_subject("PodChaos", "bench", name), event(name), msg_id=name)


async def timed(since: float, work: Awaitable[object]) -> float:
    await work
    return time.monotonic() - since


async def cycle(server: Server, b: busmod.Bus, n: int, seen: set[str], keys: set[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    restarted = await server.kill_and_restart()
    out["publish acked"] = await timed(restarted, publish(b, f"p{n}"))
    await until(lambda: f"p{n}" in seen)
    await (await b.bucket(subjects.TARGETS)).put(f"pod.bench.p{n}", pod(f"p{n}"))
    await until(lambda: f"pod.bench.p{n}" in keys)
    out["followers resumed"] = time.monotonic() - restarted

    bound = asyncio.Event()

    async def nothing(batch: list[m.ResultBatch]) -> set[int]:
        return set()

    restarted = await server.kill_and_restart()
    reader = asyncio.ensure_future(
        b.consume_batches(subjects.RESULTS, nothing, durable="recorder", subscribed=bound.set)
    )
    try:
        out["reader bound"] = await timed(restarted, bound.wait())
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

    targets = await b.bucket(subjects.TARGETS)
    restarted = await server.kill_and_restart()
    out["KV put acked"] = await timed(restarted, targets.put(f"pod.bench.k{n}", pod(f"k{n}")))
    return out


async def measure(cycles: int, folder: Path) -> dict[str, list[float]]:
    server = Server(folder)
    b = await busmod.connect(server.running.url, "bench-nats-restart")
    seen: set[str] = set()
    keys: set[str] = set()

    async def on_event(ev: m.ObjectEvent) -> None:
        seen.add(ev.name)

    async def follow() -> None:
        async for e in (await b.bucket(subjects.TARGETS)).follow():
            if e is not None:
                keys.add(e.key)

    tasks: list[asyncio.Task[None]] = []
    out: dict[str, list[float]] = {k: [] for k in MEASURES}
    try:
        await b.ensure()
        tasks = [
            asyncio.ensure_future(b.replay_and_follow(subjects.OBJECTS, on_event)),
            asyncio.ensure_future(follow()),
        ]
        await publish(b, "warm")
        await until(lambda: "warm" in seen)
        for n in range(cycles):
            for k, v in (await cycle(server, b, n, seen, keys)).items():
                out[k].append(v)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await b.close()
        server.running.stop()
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=20, help="kill-and-restart cycles (default 20)")
    args = ap.parse_args(argv)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="cbbnats-") as d:
        results = asyncio.run(measure(args.cycles, Path(d) / "nats"))
    print(f"nats-server kill -9 and restart, {args.cycles} cycles, seconds after the restart; load average {load}")
    print(f"{'':20s} {'p50':>6s} {'p90':>6s} {'max':>6s} {'mean':>6s}")
    for k in MEASURES:
        v = results[k]
        print(f"{k:20s} {pct(v, 0.5):6.2f} {pct(v, 0.9):6.2f} {max(v):6.2f} {statistics.fmean(v):6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
