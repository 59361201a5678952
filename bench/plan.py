"""What a session measures and how often: the full plan (1 to 1,000 targets over 10 node injectors)
or the quick one (< 60 s), both adjustable from the command line.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# Runs per size: (delete, pause, duration expiry). Apply figures pool all three.
FULL_RUNS = {1: (150, 50, 10), 10: (40, 15, 5), 100: (12, 5, 3), 1000: (4, 2, 2)}
QUICK_RUNS = {1: (20, 8, 2), 10: (5, 3, 1), 100: (2, 1, 1), 1000: (1, 1, 1)}


@dataclass
class Plan:
    sizes: list[int]
    nodes: int
    runs: dict[int, tuple[int, int, int]]
    concurrent: int
    concurrent_runs: int
    idle_s: float
    floor_runs: int
    out: Path
    quick: bool = False
    verify: bool = True
    profile: bool = False
    log_level: str = "info"
    kube: bool = False  # also apply -> in effect through an API server (bench/bench_kube.py)
    auth: bool = True  # NATS identities and allow-lists on, as `chaosbus up` runs
    label_sizes: list[int] = field(default_factory=list)
    cli_runs: int = 50  # `chaosbus get` runs (bench/cli.py)
    halt_runs: int = 10  # `chaosbus halt` runs, each on a running experiment over `warm_size` targets
    security_reps: int | None = None  # signed/unsigned repetitions (None: from the runs, bench/security.py)

    @property
    def pods(self) -> int:
        return max([*self.sizes, self.concurrent, self.warm_size])

    @property
    def warm_size(self) -> int:
        return self.nodes


def _runs_for(size: int, table: dict[int, tuple[int, int, int]]) -> tuple[int, int, int]:
    if size in table:
        return table[size]
    nearest = min(table, key=lambda s: abs(s - size))
    return table[nearest]


def parse(argv: list[str] | None = None) -> Plan:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK") == "1",
        help="small sizes and few runs, < 60 s (also BENCH_QUICK=1)",
    )
    p.add_argument("--sizes", default=None, help="comma-separated target counts (default 1,10,100,1000; quick 1,10)")
    p.add_argument("--nodes", type=int, default=10, help="node injectors (default 10)")
    p.add_argument("--runs", type=int, default=None, help="delete runs per size (pause and expiry scale with it)")
    p.add_argument(
        "--mix",
        default=None,
        metavar="D,P,E",
        help="delete, pause and expiry runs per size, e.g. 0,0,4 for expiry only (overrides --runs)",
    )
    p.add_argument("--concurrent", type=int, default=None, help="concurrent one-target experiments (default 100)")
    p.add_argument(
        "--security-reps",
        type=int,
        default=None,
        help="signed/unsigned repetitions of security.apply (default 8)",
    )
    p.add_argument("--idle", type=float, default=None, help="idle sampling seconds (default 10; quick 3)")
    p.add_argument("--json", dest="out", default=None, help="where to write the JSON (default bench/results/)")
    p.add_argument("--no-verify", action="store_true", help="skip the kernel readback after each run")
    p.add_argument("--profile", action="store_true", help="py-spy the services during the largest size")
    p.add_argument("--log-level", default="info", help="the services' log level (default info, as deployed)")
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="run NATS without identities and allow-lists (to compare with the default, auth on)",
    )
    p.add_argument(
        "--kube",
        action="store_true",
        default=bool(os.environ.get("CHAOSBUS_TEST_KUBECONFIG")),
        help="also time create -> in effect through an API server: CHAOSBUS_TEST_KUBECONFIG's "
        "(which turns this on), else the in-repo fake",
    )
    a = p.parse_args(argv)
    quick = bool(a.quick)
    sizes = [int(s) for s in a.sizes.split(",")] if a.sizes else ([1, 10] if quick else [1, 10, 100, 1000])
    if not sizes or min(sizes) < 1 or a.nodes < 1:
        p.error("sizes and nodes must be positive")
    if a.security_reps is not None and a.security_reps < 1:
        p.error("--security-reps must be positive")
    table = QUICK_RUNS if quick else FULL_RUNS
    runs = {s: _runs_for(s, table) for s in sizes}
    if a.runs is not None:
        runs = {s: (a.runs, max(1, a.runs // 3), max(1, a.runs // 10)) for s in sizes}
    if a.mix is not None:
        try:
            d, pz, e = (int(x) for x in a.mix.split(","))
        except ValueError:
            p.error("--mix: three comma-separated run counts (delete,pause,expiry)")
        if min(d, pz, e) < 0 or d + pz + e == 0:
            p.error("--mix: counts must be >= 0 and not all 0")
        runs = {s: (d, pz, e) for s in sizes}
    concurrent = a.concurrent if a.concurrent is not None else (10 if quick else 100)
    out = Path(a.out) if a.out else RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    plan = Plan(
        sizes=sizes,
        nodes=a.nodes,
        runs=runs,
        concurrent=concurrent,
        concurrent_runs=1 if quick else 3,
        idle_s=a.idle if a.idle is not None else (3.0 if quick else 10.0),
        floor_runs=50 if quick else 300,
        out=out,
        quick=quick,
        verify=not a.no_verify,
        profile=a.profile,
        log_level=a.log_level,
        kube=a.kube,
        auth=not a.no_auth,
        cli_runs=10 if quick else 50,
        halt_runs=2 if quick else 10,
        security_reps=a.security_reps,
    )
    plan.label_sizes = sorted({*sizes, plan.warm_size})
    return plan
