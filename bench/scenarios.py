"""The measured scenarios. Each run applies a NetworkChaos partition through the CLI's own code path
(`cli.resources.prepare` + `ObjectStore.apply`, exactly what `chaosbus apply -f` does), waits until
the kernel has committed the experiment's table in every target netns, recovers it (delete, pause
annotation, or duration expiry), waits until every table is gone, verifies both states by reading
the kernel back, and removes the experiment before the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from bench import kernel
from bench.observe import Observer
from bench.targets import GROUP_LABEL, NAMESPACE, POD_LABEL, Target
from bench.traffic import TrafficProbe
from chaosbus.cli import resources
from chaosbus.common.crd import CHAOS_KINDS
from chaosbus.common.objects import parse_rfc3339
from chaosbus.common.store import ObjectStore
from chaosbus.injector.faults.partition import table_name

KIND = "NetworkChaos"
PAUSE = "experiment.chaos-mesh.org/pause=true"
POLL_S = 0.002
PROBE_SAMPLE = 10  # targets probed for traffic at an expiry: t0..t9, one on each node
PROBE_LEAD_S = 0.15  # probing starts this long before the deadline (and must see drops)
PROBE_LIMIT_S = 10.0


def experiment_yaml(name: str, selector: dict[str, str], duration: str | None = None) -> str:
    spec: dict[str, Any] = {
        "action": "partition",
        "mode": "all",
        "selector": {"labelSelectors": selector},
        "direction": "to",
        "externalTargets": ["192.0.2.0/24"],
    }
    if duration:
        spec["duration"] = duration
    return yaml.safe_dump(
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": KIND,
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": spec,
        }
    )


@dataclass
class Run:
    """One experiment's life, in wall-clock seconds (time.time())."""

    size: int
    method: str  # delete | pause | expiry
    t0: float = 0.0  # apply started
    t_ack: float = 0.0  # the object is stored
    applied: list[float | None] = field(default_factory=list)  # per target: table committed
    t1: float = 0.0  # recover started (delete / annotation written); expiry: the deadline
    gone: list[float | None] = field(default_factory=list)
    object_gone: float | None = None
    verify_errors: int = 0
    uid: str = ""
    name: str = ""
    duration_s: float | None = None
    trace: dict[str, float] = field(default_factory=dict)  # what the bus showed (see Harness.trace)
    flowed: list[float | None] = field(default_factory=list)  # expiry: sampled targets' traffic flows again
    probe_errors: list[str] = field(default_factory=list)

    def apply_latencies(self) -> list[float]:
        return [t - self.t0 for t in self.applied if t is not None]

    def recover_latencies(self) -> list[float]:
        return [t - self.t1 for t in self.gone if t is not None]

    def flow_latencies(self) -> list[float]:
        return [t - self.t1 for t in self.flowed if t is not None]

    @property
    def missing(self) -> int:
        return sum(t is None for t in self.applied) + sum(t is None for t in self.gone)


class Harness:
    def __init__(
        self, store: ObjectStore, monitor: kernel.TableMonitor, observer: Observer, targets: list[Target]
    ) -> None:
        self.store, self.monitor, self.observer, self.targets = store, monitor, observer, targets
        self.verify = True
        self._probe: TrafficProbe | None = None

    def traffic_probe(self) -> TrafficProbe:
        """Probe sockets in the first targets (one per node): made once, kept for every run."""
        if self._probe is None:
            self._probe = TrafficProbe([t.netns for t in self.targets[:PROBE_SAMPLE]])
        return self._probe

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()

    async def apply(self, text: str) -> tuple[str, str]:
        """`chaosbus apply -f` on `text`: returns (uid, creationTimestamp) of the stored object."""
        uid = created = ""
        for obj in resources.prepare(text, None):
            stored, _ = await self.store.apply(obj, immutable_spec=obj["kind"] in CHAOS_KINDS)
            uid, created = stored["metadata"]["uid"], stored["metadata"]["creationTimestamp"]
        return uid, created

    async def wait_tables(
        self, pairs: list[tuple[str, str]], present: bool, since: float, limit_s: float
    ) -> list[float | None]:
        """Per (netns path, table), when the kernel committed the table present/absent at or after
        `since`; None: not within `limit_s`. Follows the monitor's change log, so the cost is per event.
        """
        found: list[float | None] = [None] * len(pairs)
        where: dict[tuple[str, str], list[int]] = {}
        for i, key in enumerate(pairs):
            where.setdefault(key, []).append(i)
        with self.monitor.lock:
            cursor = len(self.monitor.changes)
            for i, (path, table) in enumerate(pairs):
                state, at = self.monitor.state(path, table)
                if state == present and at >= since:
                    found[i] = at
        todo = sum(f is None for f in found)
        deadline = time.monotonic() + limit_s
        while todo and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            with self.monitor.lock:
                fresh = self.monitor.changes[cursor:]
                cursor += len(fresh)
            for path, table, state, at in fresh:
                for i in where.get((path, table), ()):
                    if found[i] is None and state == present and at >= since:
                        found[i] = at
                        todo -= 1
        return found

    async def _verify(self, targets: list[Target], table: str, present: bool) -> int:
        if not self.verify:
            return 0
        wrong = await asyncio.to_thread(kernel.readback, [t.netns for t in targets], table, present)
        return len(wrong)

    async def delete_and_wait(self, name: str, limit_s: float) -> float | None:
        """Delete (unless already deleted) and wait until the object is removed; when it was removed
        (as the object store's watch reported it), or None if not within `limit_s`.
        """
        with contextlib.suppress(resources.UsageError):  # not found: removed already
            await resources.delete(self.store, KIND, name, NAMESPACE, wait=0)
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if await self.store.get(KIND, NAMESPACE, name) is None:
                await asyncio.sleep(0.05)  # let the watch deliver the deletion
                return self.observer.view(name).gone_at or time.time()
            await asyncio.sleep(0.01)
        return None

    async def run(self, size: int, method: str, name: str, duration_s: float | None = None) -> Run:
        targets = [t for t in self.targets if t.index < size]
        timeout = 30.0 + 0.05 * size
        run = Run(size=size, method=method, name=name)
        duration = f"{duration_s:g}s" if method == "expiry" and duration_s else None
        text = experiment_yaml(name, {GROUP_LABEL.format(size=size): "y"}, duration)
        run.t0 = time.time()
        run.uid, created = await self.apply(text)
        run.t_ack = time.time()
        table = table_name(run.uid, ".")
        run.applied = await self.wait_tables([(t.netns, table) for t in targets], True, run.t0, timeout)
        # Armed before the readback, which at 1,000 targets takes over a second: it sleeps until
        # just before the deadline anyway.
        flows = (
            asyncio.ensure_future(self._flows(run, len(targets), created, duration_s))
            if method == "expiry" and duration_s
            else None
        )
        run.verify_errors += await self._verify(targets, table, True)
        applied = [t for t, at in zip(targets, run.applied, strict=True) if at is not None]
        if method == "delete":
            run.t1 = time.time()
            await resources.delete(self.store, KIND, name, NAMESPACE, wait=0)
        elif method == "pause":
            run.t1 = time.time()
            await resources.annotate(self.store, KIND, name, NAMESPACE, [PAUSE], overwrite=False)
        else:
            assert duration_s is not None
            run.t1 = parse_rfc3339(created) + duration_s  # the deadline the system itself computes
            timeout += max(0.0, run.t1 - time.time())
        since = run.t0 if method == "expiry" else run.t1
        run.gone = await self.wait_tables([(t.netns, table) for t in applied], False, since, timeout)
        if flows is not None:
            await flows
        run.gone += [None] * (len(targets) - len(applied))
        run.verify_errors += await self._verify(targets, table, False)
        run.object_gone = await self.delete_and_wait(name, timeout)
        run.duration_s = duration_s
        run.trace = self.trace(run)
        return run

    async def _flows(self, run: Run, size: int, created: str, duration_s: float) -> None:
        """From just before the deadline, when traffic flows again in the sampled targets."""
        probe = self.traffic_probe()
        deadline = parse_rfc3339(created) + duration_s
        await asyncio.sleep(max(0.0, deadline - PROBE_LEAD_S - time.time()))
        probed = (await asyncio.to_thread(probe.watch, deadline + PROBE_LIMIT_S))[:size]
        run.flowed = [p.flowed_at if p.blocked_seen else None for p in probed]
        run.probe_errors = [
            p.error or "never blocked before the deadline" for p in probed if p.error or not p.blocked_seen
        ]

    def trace(self, run: Run) -> dict[str, float]:
        """The first apply command and result of the run, and the status writes, as the bus saw them."""
        v = self.observer.by_uid.get(run.uid) or self.observer.view(run.name)
        out: dict[str, float] = {
            "bytes_max": float(v.max_bytes),
            "bytes_injected": float(v.bytes_when_injected),
            "status_bytes_max": float(v.max_status_bytes),
            "records": float(v.records),
        }
        cmds = [(seen, c) for seen, c in v.commands if any(a.op == "apply" for a in c.actions)]
        if cmds:
            out["cmd_issued"], out["cmd_seen"] = cmds[0][1].issued_at, cmds[0][0]
            out["cmd_last_seen"], out["cmd_count"] = cmds[-1][0], float(len(cmds))
        results = [(seen, b) for seen, b in v.results if any(r.op == "apply" for r in b.results)]
        if results:
            out["result_at"], out["result_seen"] = results[0][1].results[0].at, results[0][0]
            out["result_last_seen"] = results[-1][0]
        out["kv_writes"] = float(len(v.writes))
        out["status_writes"] = float(sum(alone for _, alone in v.writes))
        # Writes of the object before its first status write (the KV watch delivers them in order):
        # the apply's own, and any the object needs before the scheduler acts (a finalizer).
        first_status = next((i for i, (_, alone) in enumerate(v.writes) if alone), len(v.writes))
        out["writes_before_status"] = float(first_status)
        out["object_events"], out["status_events"] = float(len(v.object_events)), float(len(v.status_events))
        if v.all_injected_at is not None:
            out["status_injected"] = v.all_injected_at
        if v.all_recovered_at is not None:
            out["status_recovered"] = v.all_recovered_at
        return out

    async def concurrent(self, count: int, tag: str, cpu: Callable[[], dict[str, float]]) -> dict[str, Any]:
        """`count` experiments of one target each, applied at once; then all deleted at once. `cpu`
        reads the services' CPU seconds, taken when the applies start and when all are in effect.
        """
        targets = self.targets[:count]
        names = [f"{tag}-{t.index}" for t in targets]
        texts = [experiment_yaml(n, {POD_LABEL: str(t.index)}) for n, t in zip(names, targets, strict=True)]
        cpu0 = cpu()
        t0 = time.time()
        stored = await asyncio.gather(*(self.apply(text) for text in texts))
        tables = [table_name(uid, ".") for uid, _ in stored]
        timeout = 30.0 + 0.05 * count
        pairs = [(t.netns, tb) for t, tb in zip(targets, tables, strict=True)]
        applied = await self.wait_tables(pairs, True, t0, timeout)
        t_all = time.time()
        cpu1 = cpu()
        t1 = time.time()
        await asyncio.gather(*(resources.delete(self.store, KIND, n, NAMESPACE, wait=0) for n in names))
        gone = await self.wait_tables(pairs, False, t1, timeout)
        for n in names:
            await self.delete_and_wait(n, timeout)
        ins = [a - t0 for a in applied if a is not None]
        outs = [g - t1 for g in gone if g is not None]
        cpu_s = {k: cpu1[k] - cpu0[k] for k in cpu1 if k in cpu0}
        return {
            "t0": t0,
            "t_all": t_all,
            "apply": ins,
            "recover": outs,
            "cpu_s": cpu_s,
            "cpu_pct": {k: 100.0 * v / (t_all - t0) for k, v in cpu_s.items()},
            "missing": 2 * count - len(ins) - len(outs),
        }


def expiry_duration(all_in_effect_p99: float, size: int = 1, verify: bool = False) -> float:
    """A duration long enough that the fault is in effect, and read back, well before its deadline
    (creation timestamps have whole seconds, so a deadline can come up to 1 s early; the readback
    costs 1.4 ms per target, more under load).
    """
    readback = 0.004 * size if verify else 0.0
    return float(max(2, math.ceil(2 * all_in_effect_p99 + 1.5 + readback)))
