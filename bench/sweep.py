"""The orphan sweep's cost on one node: N network namespaces an injector's journal recorded (as the
1,000-target phase leaves 100 on each of its ten injectors), each with a process in it (a pod's
`sleep`) and nothing of ours left (the usual case: the faults there ended), swept as the injector
sweeps them (every fault's orphan finder, through the process's backends). Per netns: wall time
of all finders, and the CPU spent in this process and in the processes it spawned (getrusage);
per finder: its wall time. Then whole sweeps (`Sweeper.sweep`, its blocking calls on a thread pool
as in the injector) over the N namespaces.

`python -m bench.sweep [--netns 100] [--rounds 5]` prints the figures (root: it creates netns).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.report import Row, Section, fmt_s, pct, summary
from chaosbus.common import messages as m
from chaosbus.common import netns as nsutil
from chaosbus.injector import faults
from chaosbus.injector import journal as jr
from chaosbus.injector.backends._glue import native
from chaosbus.injector.backends.kit import Backends, process_backends
from chaosbus.injector.journal import Entry, Identity, Journal, NetnsRef
from chaosbus.injector.locks import Gate
from chaosbus.injector.sweeper import Sweeper, SweepReport

NETNS_GOAL_S = 0.002  # per netns, wall: a sweep of 100 netns stays a fraction of a core-second


def _cpu() -> tuple[float, float]:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def _ended_entry(uid: str, ref: NetnsRef) -> Entry:
    action = m.TargetAction(target_id=f"default/{uid}", op="apply", fault=m.Partition())
    return Entry(
        key=jr.entry_key(uid, ".", f"default/{uid}"),
        experiment_uid=uid,
        generation=1,
        kind="NetworkChaos",
        namespace="default",
        name=uid,
        action=action,
        identity=Identity(netns=(ref,)),
        original={},
        deadline=None,
        lasting=True,
        state=jr.RECOVERED,
    )


async def _sweep_on_threads(journal: Journal, backends: Backends) -> SweepReport:
    """One sweep as the injector runs it: its blocking calls on a thread pool (`Node.run_in_thread`)."""
    pool = ThreadPoolExecutor(4, thread_name_prefix="bench-sweep")
    loop = asyncio.get_running_loop()

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await loop.run_in_executor(pool, functools.partial(fn, *args))

    try:
        return await Sweeper(journal, Gate(), f"bench-sweep-{os.getpid()}", run=run, backends=backends).sweep()
    finally:
        pool.shutdown()


def measure(count: int, rounds: int) -> dict[str, Any]:
    names = [f"cbswp{os.getpid() % 100000}-{i}" for i in range(count)]
    made: list[str] = []
    pods: list[subprocess.Popen[bytes]] = []
    out: dict[str, Any] = {"netns": [], "own_cpu": [], "child_cpu": [], "sweep": [], "sweep_cpu": [], "finders": {}}
    try:
        for n in names:
            made.append(nsutil.create_named_netns(n))
            pods.append(subprocess.Popen([native.helper("nsexec"), "--net", made[-1], "--", "sleep", "3600"]))
        refs = [NetnsRef(p, nsutil.netns_inode(p)) for p in made]
        backends = process_backends()
        finders = faults.orphans()
        for tag in finders:
            out["finders"][tag] = []
        for _ in range(rounds):
            with backends.netns_procs.shared():  # one /proc scan per round, as per sweep
                for ref in refs:
                    (own0, kids0), t0 = _cpu(), time.perf_counter()
                    with backends.nft.shared_listings():  # the finders share one listing, as in a sweep
                        for tag, orphans in finders.items():
                            f0 = time.perf_counter()
                            orphans.find(ref.path, backends)
                            out["finders"][tag].append(time.perf_counter() - f0)
                    (own1, kids1), t1 = _cpu(), time.perf_counter()
                    out["netns"].append(t1 - t0)
                    out["own_cpu"].append(own1 - own0)
                    out["child_cpu"].append(kids1 - kids0)
        with tempfile.TemporaryDirectory() as tmp:
            journal = Journal(Path(tmp) / "journal.db", sync="normal")
            try:
                journal.write_intents([_ended_entry(f"u{i}", r) for i, r in enumerate(refs)])
                for _ in range(rounds):
                    (own0, kids0), t0 = _cpu(), time.perf_counter()
                    report = asyncio.run(_sweep_on_threads(journal, backends))
                    (own1, kids1), t1 = _cpu(), time.perf_counter()
                    if report.netns != count or report.removed or report.errors:
                        raise RuntimeError(f"the sweep saw {report.netns} netns, removed {report.removed}: not idle")
                    out["sweep"].append(t1 - t0)
                    out["sweep_cpu"].append(own1 - own0 + kids1 - kids0)
            finally:
                journal.close()
    finally:
        for pod in pods:
            pod.kill()
            pod.wait()
        for n in names:
            nsutil.remove_named_netns(n)
    return out


def rows(raw: dict[str, Any]) -> Section:
    count = len(raw["sweep"]) and len(raw["netns"]) // len(raw["sweep"])
    sec = Section(f"The orphan sweep over {count} netns, each with a process and nothing of ours (one injector)")
    lat = raw["netns"]
    row = Row(
        "sweep.netns",
        "every fault's orphan finder in one netns",
        str(len(lat)),
        fmt_s(pct(lat, 50)),
        fmt_s(pct(lat, 99)),
        data={"netns": summary(lat), "own_cpu": summary(raw["own_cpu"]), "child_cpu": summary(raw["child_cpu"])},
    )
    row.extra = (
        f"CPU p50 own {fmt_s(pct(raw['own_cpu'], 50))} + spawned {fmt_s(pct(raw['child_cpu'], 50))}; "
        + ", ".join(f"{tag} {fmt_s(pct(v, 50))}" for tag, v in raw["finders"].items())
    )
    row.target = f"<= {fmt_s(NETNS_GOAL_S)} p50"
    row.verdict = "met" if lat and pct(lat, 50) <= NETNS_GOAL_S else "missed"
    sec.rows.append(row)
    whole = raw["sweep"]
    row = Row(
        "sweep.whole",
        f"Sweeper.sweep over the {count} netns",
        str(len(whole)),
        fmt_s(pct(whole, 50)),
        fmt_s(max(whole) if whole else float("nan")),
        data={"sweep": summary(whole), "cpu": summary(raw["sweep_cpu"])},
    )
    row.extra = f"CPU p50 {fmt_s(pct(raw['sweep_cpu'], 50))} (own + spawned); p99 column: the slowest"
    sec.rows.append(row)
    return sec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--netns", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    raw = measure(args.netns, args.rounds)
    for row in rows(raw).rows:
        print(f"{row.id}: n={row.n} p50 {row.p50} p99 {row.p99}; {row.extra}")


if __name__ == "__main__":
    main()
