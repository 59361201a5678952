"""One benchmark session: set up (nats-server, services, target netns and pods, kernel monitor),
measure (floors, idle, each size and recovery method, concurrent experiments), tear everything
down whatever happens (Ctrl-C included), and check that nothing was left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import cli, floors, kernel, security, targets
from bench.cluster import WORKDIR_PREFIX, Cluster, Sampler, remove_stale
from bench.observe import Observer
from bench.plan import Plan
from bench.profile import Profiler
from bench.scenarios import KIND, Harness, Run, expiry_duration
from chaosbus.cli import leftovers
from chaosbus.common import bus as busmod
from chaosbus.common import netns as nsu
from chaosbus.common import subjects
from chaosbus.common.store import ObjectStore

FLOOR_NETNS = "floor"


@dataclass
class Session:
    plan: Plan
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-")))
    cluster: Cluster | None = None
    sampler: Sampler | None = None
    monitor: kernel.TableMonitor | None = None
    targets: list[targets.Target] = field(default_factory=list)
    floor_netns: str = ""
    libnft: kernel.LibNft | None = None
    profiler: Profiler | None = None
    log: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        self.log.append(line)
        print(line, flush=True)

    # --- set-up and tear-down (sync: also runs after the event loop is gone) ---------------------

    def setup(self) -> None:
        stale = targets.remove_stale() + remove_stale()
        if stale:
            more = " ..." if len(stale) > 5 else ""
            self.say(f"removed what a killed earlier run left: {', '.join(stale[:5])}{more}")
        nodes = [f"node-{i}" for i in range(self.plan.nodes)]
        self.cluster = Cluster(self.workdir, nodes, auth=self.plan.auth)
        self.say(f"starting nats-server, watcher, scheduler, recorder and {len(nodes)} injectors")
        self.cluster.start(self.plan.log_level)
        self.floor_netns = nsu.create_named_netns(f"{targets.netns_prefix()}{FLOOR_NETNS}")
        self.monitor = kernel.TableMonitor()
        self.monitor.watch(self.floor_netns)
        if kernel.libnftables_available():
            # Opened now, while fds are low: libnftables 1.0.6 select()s on its socket and aborts
            # the process on an fd >= 1024 (the targets' pipes and sockets come next).
            self.libnft = kernel.LibNft()
            self.libnft.open(self.floor_netns)
        self.say(f"creating {self.plan.pods} target netns, each with one process")
        t = time.monotonic()
        self.targets = targets.create(self.plan.pods, nodes)
        for tg in self.targets:
            self.monitor.watch(tg.netns)
        self.monitor.start()
        self.say(f"targets ready in {time.monotonic() - t:.1f}s; waiting for the services")
        self.cluster.wait_ready()
        self.sampler = Sampler(self.cluster)
        self.sampler.start()

    def teardown(self) -> list[str]:
        """Stop everything we started; returns what is still there (empty: clean)."""
        problems: list[str] = []
        if self.profiler is not None:
            with contextlib.suppress(Exception):
                self.profiler.stop()
        if self.sampler is not None:
            self.sampler.stop()
        if self.cluster is not None:
            problems += [f"service {n} survived" for n in self.cluster.stop()]
        if self.monitor is not None:
            self.monitor.close()
        if self.libnft is not None:
            self.libnft.close()
        problems += targets.destroy(self.targets)
        if self.floor_netns:
            with contextlib.suppress(OSError):
                nsu.remove_named_netns(Path(self.floor_netns).name)
        if os.environ.get("BENCH_KEEP_LOGS"):  # the services' logs, for reading a run afterwards
            self.say(f"kept the services' logs in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        problems += [f"netns {n}" for n in leftovers.netns_names(targets.netns_prefix())]
        mine = {t.pid for t in self.targets} | {s.proc.pid for s in (self.cluster.services if self.cluster else [])}
        problems += [f"process {pid}" for pid in sorted(mine) if _running(pid)]
        return problems

    # --- the measurements --------------------------------------------------------------------------

    async def measure(self) -> dict[str, Any]:
        assert self.cluster is not None and self.monitor is not None and self.sampler is not None
        bus = await busmod.connect(self.cluster.url, "chaosbus-bench")
        try:
            await bus.ensure()
            return await self._measure(bus)
        finally:
            await bus.close()

    async def _measure(self, bus: busmod.Bus) -> dict[str, Any]:
        assert self.cluster is not None and self.monitor is not None and self.sampler is not None
        plan, sampler = self.plan, self.sampler
        store = ObjectStore(await bus.bucket(subjects.OBJECT_STORE))
        await targets.register(store, self.targets, plan.label_sizes)
        await _wait_projected(bus, len(self.targets))
        observer = Observer(bus, KIND, targets.NAMESPACE)
        await observer.start()
        h = Harness(store, self.monitor, observer, self.targets)
        h.verify = plan.verify
        self.say(f"pods registered and projected; floors ({plan.floor_runs} runs each)")
        out: dict[str, Any] = {
            "floors": await floors.measure(
                self.cluster.url, self.floor_netns, plan.floor_runs, self.monitor, self.libnft
            )
        }
        self.say(f"warm-up (one target per node), then {plan.idle_s:g}s idle")
        await h.run(plan.warm_size, "delete", "warmup")
        await asyncio.sleep(1.0)
        windows: dict[str, tuple[float, float]] = {}
        t = time.time()
        sampler.sample_now()
        await asyncio.sleep(plan.idle_s)
        sampler.sample_now()
        windows["idle"] = (t, time.time())
        runs: list[Run] = []
        for size in plan.sizes:
            t_size = time.time()
            loaded = size == max(plan.sizes)
            if loaded and plan.profile:
                self._start_profile(f"size-{size}")
            runs += await self._size(h, size)
            sampler.sample_now()
            windows[f"size-{size}"] = (t_size, time.time())
            if loaded:
                windows["loaded"] = (t_size, time.time())
                self._stop_profile(out)
        out["runs"] = runs
        if plan.profile:
            self._start_profile(f"concurrent-{min(plan.concurrent, len(self.targets))}")
        out["concurrent"] = await self._concurrent(h)
        self._stop_profile(out)
        self.say(f"chaosbus get x{plan.cli_runs}, chaosbus halt x{plan.halt_runs} on {plan.warm_size} targets")
        out["cli"] = await cli.measure(h, self.cluster.url, plan.cli_runs, plan.halt_runs, plan.warm_size)
        out["resources"] = {
            w: {s.name: sampler.window(s.name, a, b) for s in self.cluster.services} for w, (a, b) in windows.items()
        }
        out["security"] = {"cost": security.signing_cost()}
        small = [s for s in plan.sizes if s <= 100] or [min(plan.sizes)]
        per_half, reps = security.plan(small, plan.runs[min(small)][0], plan.quick)
        reps = plan.security_reps or reps
        out["security"]["apply"] = await security.on_off(self.cluster, h, per_half, reps, plan.log_level, self.say)
        h.close()
        out["monitor_overflows"] = self.monitor.overflows
        out["dead_services"] = self.cluster.dead()
        await observer.close()
        return out

    async def _size(self, h: Harness, size: int) -> list[Run]:
        plan = self.plan
        n_del, n_pause, n_exp = plan.runs[size]
        self.say(f"{size} target(s): {n_del} delete + {n_pause} pause + {n_exp} expiry runs")
        runs = []
        for i in range(n_del):
            runs.append(await h.run(size, "delete", f"b{size}-delete-{i}"))
        for i in range(n_pause):
            runs.append(await h.run(size, "pause", f"b{size}-pause-{i}"))
        alls = [max(r.apply_latencies()) for r in runs if r.apply_latencies()]
        duration = expiry_duration(max(alls) if alls else 1.0, size, self.plan.verify)
        for i in range(n_exp):
            runs.append(await h.run(size, "expiry", f"b{size}-expiry-{i}", duration_s=duration))
        bad = sum(r.missing for r in runs)
        if bad:
            self.say(f"  {bad} target state(s) never reached within the timeout at size {size}")
        return runs

    async def _concurrent(self, h: Harness) -> list[dict[str, Any]]:
        count = min(self.plan.concurrent, len(self.targets))
        self.say(f"{count} concurrent experiments of one target each, {self.plan.concurrent_runs} run(s)")
        assert self.sampler is not None
        out = []
        for i in range(self.plan.concurrent_runs):
            res = await h.concurrent(count, f"c{i}", self.sampler.cpu_seconds)
            res["count"] = count
            out.append(res)
        return out

    def _start_profile(self, tag: str) -> None:
        assert self.cluster is not None
        wanted = ["watcher", "scheduler", "recorder", "injector/node-0"]
        pids = {n: self.cluster.find(n).proc.pid for n in wanted}
        self.profiler = Profiler(self.plan.out.parent / "profile" / tag, pids, tag=tag)
        if not self.profiler.start():
            self.say("py-spy not found: no profile (pip install py-spy)")
            self.profiler = None

    def _stop_profile(self, out: dict[str, Any]) -> None:
        if self.profiler is not None:
            out.setdefault("profile", {})[self.profiler.tag] = self.profiler.stop()
            self.profiler = None


async def _wait_projected(bus: busmod.Bus, count: int, limit_s: float = 120.0) -> None:
    """Until the watcher has projected `count` bench pods, then a moment for the scheduler to follow."""
    projected = await bus.bucket(subjects.TARGETS)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if len(await projected.keys(subjects.target_pod_key(targets.NAMESPACE, ">"))) >= count:
            await asyncio.sleep(1.0)
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the watcher did not project {count} pods within {limit_s:.0f}s")


def _running(pid: int) -> bool:
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] not in ("Z", "X")
    return False
