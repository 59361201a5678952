"""A chaos test of chaosbus itself: a private `chaosbus up` (its own NATS, state dir, node, bridge
and pods), cycles of random experiments (partition, bandwidth shaping, pod-kill, HelloWorld; with
and without a duration), `kill -9` of the injector, scheduler, recorder or nats-server at random moments (`up`
restarts them), then: every experiment reached its expected final state, and no netns of the test
holds an nftables table or a qdisc of ours, no stray process is left and the state directory
holds no fault's file.

A poller thread watches every pod netns (every 0.1 s), so the report can say how late, against its
deadline, each timed partition actually left the kernel. Used by tests/e2e/test_recovery.py (a few
cycles) and bench/chaos_selftest.py (200 cycles, figures printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psutil
import yaml

from chaosbus.cli import resources
from chaosbus.common import bus as busmod
from chaosbus.common import natsauth, objects, subjects
from chaosbus.common import netns as nsutil
from chaosbus.common.store import ObjectStore
from chaosbus.injector.backends import nft
from chaosbus.injector.faults.partition import table_name

T = TypeVar("T")
COMPONENTS = ("injector", "scheduler", "recorder", "nats-server")
KIND = {"partition": "NetworkChaos", "bandwidth": "NetworkChaos", "pod-kill": "PodChaos", "hello": "HelloWorldChaos"}
OUR_QDISC = re.compile(r"^qdisc \S+ cb[0-9a-f]{2}:")  # the shaping backend's handles cb00:-cbff:


@dataclass
class Experiment:
    name: str
    what: str  # partition | pod-kill | hello
    duration: float | None
    delete_after: float | None  # seconds after creation; None: kept
    created: float = 0.0
    uid: str = ""
    created_at: float = 0.0  # creationTimestamp (what the deadline counts from)

    @property
    def kind(self) -> str:
        return KIND[self.what]


@dataclass
class Report:
    cycles: int = 0
    experiments: Counter[str] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    converged_s: float = 0.0
    not_final: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    overshoot_s: list[float] = field(default_factory=list)  # gone - deadline, injector running at the deadline
    after_restart_s: list[float] = field(default_factory=list)  # gone - injector restart, it was down at the deadline
    outcomes: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0

    def lines(self) -> list[str]:
        out = [
            f"cycles: {self.cycles}, wall time {self.wall_s:.0f}s",
            "experiments: " + ", ".join(f"{k} {v}" for k, v in sorted(self.experiments.items())),
            "kill -9: " + ", ".join(f"{k} {v}" for k, v in sorted(self.kills.items())),
            "final states: " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())),
            f"all experiments final {self.converged_s:.1f}s after the last action",
            f"not in their expected final state: {len(self.not_final)}",
            f"leftovers: {len(self.leftovers)}",
        ]
        if self.overshoot_s:
            out.append(
                "timed partitions, injector running at the deadline: left the kernel "
                f"{_stats(self.overshoot_s, '+')} after it"
            )
        if self.after_restart_s:
            out.append(
                "timed partitions, injector killed and not yet restarted at the deadline (up's backoff): "
                f"left the kernel {_stats(self.after_restart_s, '')} after the injector restarted"
            )
        return out + [f"  NOT FINAL {x}" for x in self.not_final] + [f"  LEFTOVER {x}" for x in self.leftovers]


class Poller(threading.Thread):
    """When each chaosbus table was last seen, and first seen gone, in each pod netns."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(daemon=True, name="selftest-poller")
        self.paths, self.stop = paths, threading.Event()
        self.seen: dict[str, float] = {}
        self.gone: dict[str, float] = {}

    def run(self) -> None:
        while not self.stop.wait(0.1):
            now, present = time.time(), set()
            for p in self.paths:
                try:
                    present |= {t for t in nft.list_tables(p) if t.startswith(nft.TABLE_PREFIX)}
                except nft.NftError:
                    continue
            for t in present:
                self.seen[t] = now
                self.gone.pop(t, None)
            for t in set(self.seen) - present:
                self.gone.setdefault(t, now)


class SelfTest:
    def __init__(
        self,
        workdir: Path,
        *,
        cycles: int,
        seed: int | None = None,
        kill_probability: float = 0.6,
        pods: int = 4,
        max_duration: float = 4.0,
        settle_s: float = 120.0,
        schedule: list[str] | None = None,
    ) -> None:
        self.workdir, self.cycles, self.kill_p, self.n_pods = workdir, cycles, kill_probability, pods
        self.rng = random.Random(seed)
        self.max_duration, self.settle_s = max_duration, settle_s
        self.schedule = list(schedule or [])  # components to kill, in order, before random ones
        tag = f"{os.getpid() % 10000}{self.rng.randrange(100):02d}"
        self.node, self.bridge = f"selftest-{tag}", f"cbst{tag}"
        self.subnet = f"10.218.{int(tag) % 250}.0/24"
        self.state = workdir / "state"
        self.env = {**os.environ, "CHAOSBUS_STATE_DIR": str(self.state), "CHAOSBUS_NODE": self.node}
        self.env.pop("CHAOSBUS_NATS_URL", None)
        self.env.pop("CHAOSBUS_JOURNAL", None)
        self.up: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.pods: dict[str, str] = {}  # pod name -> netns path
        self.experiments: list[Experiment] = []
        self.report = Report()
        self.kill_log: list[tuple[float, str]] = []
        self.bus: busmod.Bus | None = None
        self.store: ObjectStore | None = None

    # --- the system ---------------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "chaosbus.cli", *args], text=True, capture_output=True, env=self.env, timeout=60
        )
        if check and done.returncode != 0:
            raise AssertionError(f"chaosbus {' '.join(args)}: {done.stdout}{done.stderr}")
        return done

    def cli_stdin(self, stdin: str, *args: str, check: bool = True) -> str:
        """Run a CLI command with `stdin`; its stdout, or (check=False, failed) its stderr."""
        done = subprocess.run(
            [sys.executable, "-m", "chaosbus.cli", *args],
            text=True,
            capture_output=True,
            env=self.env,
            timeout=60,
            input=stdin,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"chaosbus {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout if done.returncode == 0 else done.stderr

    def start(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "up.log", "ab") as out:
            self.up = subprocess.Popen(
                [sys.executable, "-m", "chaosbus.cli", "up", "--port", "0", "--metrics-base-port", "0"],
                env=self.env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        url_file = self.state / "nats.url"
        _wait(lambda: url_file.exists() and url_file.read_text().strip(), 20, "chaosbus up")
        self.url = url_file.read_text().strip()
        _wait(
            lambda: all(
                '"ready"' in _read(self.state / "logs" / f"{s}.log")
                or "ready" in _read(self.state / "logs" / f"{s}.log")
                for s in ("scheduler", "recorder", "injector")
            ),
            20,
            "services ready",
        )
        for i in range(self.n_pods):
            name = f"st-{i}"
            self.cli(
                "pod",
                "run",
                "--name",
                name,
                "-l",
                f"app={self.node}",
                "--bridge",
                self.bridge,
                "--subnet",
                self.subnet,
                "--",
                "sleep",
                "infinity",
            )
            pod = json.loads(self.cli("get", "pod", name, "-o", "json").stdout)
            self.pods[name] = nsutil.netns_path(pod["metadata"]["annotations"]["chaosbus.io/netns"])

    def stop(self) -> None:
        self.cli("pod", "rm", "--all", check=False)
        if self.up is not None and self.up.poll() is None:
            self.up.terminate()
            try:
                self.up.wait(30)
            except subprocess.TimeoutExpired:
                self.up.kill()
                self.up.wait()

    def pids(self, component: str) -> list[int]:
        marker = str(self.state / "nats") if component == "nats-server" else f"chaosbus.{component}"
        found = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if marker in cmd and (component == "nats-server" or self.url in cmd):
                found.append(p.info["pid"])
        return found

    def _wait_healthy(self, within: float = 60.0) -> None:
        """Every component running again for at least a second (`up` restarts them with backoff)."""

        def healthy() -> bool:
            return all(max((_age(pid) for pid in self.pids(c)), default=0.0) >= 1.0 for c in COMPONENTS)

        try:
            _wait(healthy, within, "components back")
        except AssertionError:
            pass  # a crash-looping service (backoff up to 30 s): carry on, the checks at the end still hold

    def kill(self, component: str) -> None:
        for pid in self.pids(component):
            try:
                os.kill(pid, signal.SIGKILL)
                self.report.kills[component] += 1
                self.kill_log.append((time.time(), component))
            except ProcessLookupError:
                pass

    # --- experiments ------------------------------------------------------------------------------

    async def _retry(self, fn: Callable[[], Awaitable[T]], within: float = 60.0) -> T:
        deadline = time.monotonic() + within
        while True:
            try:
                return await fn()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    def _random_experiment(self, i: int) -> Experiment:
        what = self.rng.choice(["partition", "partition", "bandwidth", "pod-kill", "hello"])
        if what == "pod-kill":
            return Experiment(f"e{i}-{what}", what, None, None)
        timed = self.rng.random() < 0.6
        duration = round(self.rng.uniform(min(2.0, self.max_duration), self.max_duration), 1) if timed else None
        return Experiment(f"e{i}-{what}", what, duration, None if timed else self.rng.uniform(1.0, 4.0))

    def _manifest(self, e: Experiment) -> str:
        spec: dict[str, Any]
        if e.what == "partition":
            a, b = self.rng.sample(sorted(self.pods), 2)
            spec = {
                "action": "partition",
                "mode": "all",
                "selector": {"fieldSelectors": {"metadata.name": a}},
                "direction": self.rng.choice(["to", "from", "both"]),
                "target": {"mode": "all", "selector": {"fieldSelectors": {"metadata.name": b}}},
            }
        elif e.what == "bandwidth":  # tbf: what this kernel (no sch_netem) can shape
            a, b = self.rng.sample(sorted(self.pods), 2)
            spec = {
                "action": "bandwidth",
                "mode": "all",
                "selector": {"fieldSelectors": {"metadata.name": a}},
                "direction": self.rng.choice(["to", "both"]),
                "bandwidth": {"rate": "1mbps", "limit": 20971520, "buffer": 10000},
                "target": {"mode": "all", "selector": {"fieldSelectors": {"metadata.name": b}}},
            }
        elif e.what == "pod-kill":
            spec = {"action": "pod-kill", "mode": "one", "selector": {"labelSelectors": {"app": self.node}}}
        else:
            spec = {"mode": "one", "selector": {"labelSelectors": {"app": self.node}}}
        if e.duration is not None:
            spec["duration"] = f"{e.duration}s"
        return yaml.safe_dump(
            {
                "apiVersion": "chaos-mesh.org/v1alpha1",
                "kind": e.kind,
                "metadata": {"name": e.name, "namespace": "default"},
                "spec": spec,
            }
        )

    async def _apply(self, e: Experiment) -> None:
        assert self.store is not None
        store = self.store
        await self._retry(lambda: resources.apply(store, self._manifest(e), "default"))
        obj = await self._retry(lambda: store.get(e.kind, "default", e.name))
        assert obj is not None
        e.uid, e.created = obj["metadata"]["uid"], time.monotonic()
        e.created_at = objects.parse_rfc3339(obj["metadata"]["creationTimestamp"])
        self.experiments.append(e)
        self.report.experiments[e.what + ("" if e.duration or e.what == "pod-kill" else " (deleted)")] += 1

    async def _delete_due(self) -> None:
        assert self.store is not None
        store = self.store
        for e in self.experiments:
            if e.delete_after is not None and time.monotonic() - e.created >= e.delete_after:
                e.delete_after = None
                await self._retry(
                    lambda e=e: resources.delete(
                        store,
                        e.kind,
                        e.name,
                        "default",  # type: ignore[misc]
                        wait=0.0,
                    )
                )
                e.duration = -1.0  # marks "deleted"

    async def run(self) -> Report:
        started = time.monotonic()
        self.start()
        poller = Poller(list(self.pods.values()))
        poller.start()
        try:
            self.bus = await busmod.connect(
                self.url,
                "selftest",
                auth=natsauth.ClientAuth(natsauth.seed_file(natsauth.ADMIN, self.state), admin=True),
            )
            await self.bus.ensure()
            self.store = ObjectStore(await self.bus.bucket(subjects.OBJECT_STORE))
            await self._cycles()
            last = time.monotonic()
            await self._settle()
            self.report.converged_s = time.monotonic() - last
            await asyncio.sleep(0.3)
            self._overshoot(poller)
            self.report.leftovers += self.scan()
        finally:
            poller.stop.set()
            if self.bus is not None:
                await self.bus.close()
            self.stop()
        self.report.leftovers += self.scan_after_stop()
        self.report.wall_s = time.monotonic() - started
        return self.report

    async def _cycles(self) -> None:
        for i in range(self.cycles):
            await self._apply(self._random_experiment(i))
            await asyncio.sleep(self.rng.uniform(0.1, 1.2))
            victim = (
                self.schedule.pop(0)
                if self.schedule
                else (self.rng.choice(COMPONENTS) if self.rng.random() < self.kill_p else None)
            )
            if victim:
                self.kill(victim)
                await asyncio.sleep(self.rng.uniform(0.1, 0.8))
                await asyncio.to_thread(self._wait_healthy)  # restarted, so the next kill is a new event
            else:
                await asyncio.sleep(self.rng.uniform(0.1, 0.8))
            await self._delete_due()
            self.report.cycles += 1
        while any(e.delete_after is not None for e in self.experiments):
            await asyncio.sleep(0.2)
            await self._delete_due()

    # --- checks -----------------------------------------------------------------------------------

    async def _settle(self) -> None:
        deadline = time.monotonic() + self.settle_s
        while True:
            states = [(e, await self._final(e)) for e in self.experiments]
            self.report.not_final = [f"{e.kind}/{e.name}: {why}" for e, (ok, why) in states if not ok]
            if not self.report.not_final or time.monotonic() > deadline:
                self.report.outcomes = Counter(why for _, (ok, why) in states if ok)
                return
            await asyncio.sleep(0.5)

    async def _final(self, e: Experiment) -> tuple[bool, str]:
        """(reached its expected final state?, which one or why not)."""
        assert self.store is not None
        try:
            obj = await self.store.get(e.kind, "default", e.name)
        except Exception as ex:
            return False, f"unreadable ({type(ex).__name__})"
        if e.duration == -1.0:
            return obj is None, "deleted (finalizer released after recovery)" if obj is None else "still there"
        if obj is None:
            return False, "missing"
        st = obj.get("status") or {}
        records = (st.get("experiment") or {}).get("containerRecords") or []
        phases = sorted({r.get("phase") for r in records})
        if e.what == "pod-kill":
            return phases == ["Injected"], "pod-kill done" if phases == ["Injected"] else f"phases {phases}"
        desired = (st.get("experiment") or {}).get("desiredPhase")
        if desired != "Stop" or time.time() < e.created_at + (e.duration or 0):
            return False, f"desired {desired}"
        if not records:  # Chaos Mesh semantics: the duration counts from creation, even if nothing ran
            return True, "expired before it could run (control plane down for its whole duration)"
        return phases == ["Not Injected"], "ran and recovered" if phases == ["Not Injected"] else f"phases {phases}"

    def _overshoot(self, poller: Poller) -> None:
        starts = self._injector_starts()
        for e in self.experiments:
            if e.what != "partition" or not e.duration or e.duration < 0:
                continue
            deadline = e.created_at + e.duration
            for side in (".", ".Target"):
                t = table_name(e.uid, side)
                if t not in poller.gone:
                    continue
                restart = self._restart_after_downtime(deadline, starts)
                if restart is None:
                    self.report.overshoot_s.append(poller.gone[t] - deadline)
                else:
                    self.report.after_restart_s.append(poller.gone[t] - restart)

    def _injector_starts(self) -> list[float]:
        starts = []
        for line in _read(self.state / "logs" / "injector.log").splitlines():
            if '"injector starting"' in line:
                starts.append(datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp())
        return sorted(starts)

    def _restart_after_downtime(self, t: float, starts: list[float]) -> float | None:
        """If the injector was killed before `t` and not yet restarted at `t`: its restart time."""
        kills = [k for k, c in self.kill_log if c == "injector" and k <= t]
        if not kills:
            return None
        after = [s for s in starts if s > kills[-1]]
        return after[0] if after and after[0] > t else None

    def scan(self) -> list[str]:
        """Leftovers in the test's pod netns (tables, sets inside them, our qdiscs) and helpers."""
        found = []
        for name, path in self.pods.items():
            try:
                found += [f"nft table {t} in {name}" for t in nft.list_tables(path)]
            except nft.NftError as ex:
                found.append(f"{name}: {ex}")
            out = subprocess.run(
                ["nsenter", f"--net={path}", "tc", "qdisc", "show"], capture_output=True, text=True, timeout=10
            ).stdout
            found += [f"qdisc in {name}: {ln}" for ln in out.splitlines() if OUR_QDISC.match(ln)]
        for p in psutil.process_iter(["pid", "cmdline", "environ"]):
            env = p.info.get("environ") or {}
            if env.get("CHAOSBUS_FAULT_NODE") == self.node:
                found.append(f"helper process {p.info['pid']}")
        # Every experiment is final: no fault owns a file in the state directory any more.
        for sub in ("tc-originals", "iochaos"):
            with contextlib.suppress(FileNotFoundError):
                found += [f"state file {sub}/{n}" for n in sorted(os.listdir(self.state / sub))]
        return found

    def scan_after_stop(self, within_s: float = 20.0) -> list[str]:
        """What is left of the system once stopped; a pod supervisor that is still tearing its pod
        down (netns, holds, cgroup, then the Pod object) is given `within_s` to finish.
        """
        deadline = time.monotonic() + within_s
        while (found := self._left_after_stop()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return found

    def _left_after_stop(self) -> list[str]:
        found = [f"netns {p}" for p in self.pods.values() if os.path.exists(p)]
        if os.path.exists(f"/sys/class/net/{self.bridge}"):
            found.append(f"bridge {self.bridge}")
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if str(self.state) in cmd or (self.url and self.url in cmd) or self.node in cmd:
                found.append(f"process {p.info['pid']}: {cmd[:100]}")
        return found


def _stats(xs: list[float], sign: str) -> str:
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(0.99 * len(xs)))]
    return f"n={len(xs)} p50 {statistics.median(xs):{sign}.2f}s p99 {p99:{sign}.2f}s max {xs[-1]:{sign}.2f}s"


def _age(pid: int) -> float:
    try:
        return time.time() - psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _wait(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)
