"""`python -m bench [--quick]` (`make bench`): run the benchmark, print the figures table with
PASS/FAIL beside each target, write the JSON (bench/results/bench-<time>.json unless --json), and
leave nothing behind. Needs root (network namespaces, nftables). See docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import figures, report
from bench import gosql as bench_gosql
from bench import sweep as bench_sweep
from bench import timeskew as bench_timeskew
from bench.plan import Plan, parse
from bench.run import Session
from bench.scenarios import Run

SWEEP_NETNS = 100  # what one of ten injectors' journals holds after the 1,000-target phase


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parents[1]
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def _meta(plan: Plan, started: float) -> dict[str, Any]:
    dirty = [line[3:] for line in _git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": time.time() - started,
        "loadavg_at_end": os.getloadavg(),
        "harness_cpu_s": sum(os.times()[:2]),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty_files": dirty,
        "plan": {
            "sizes": plan.sizes,
            "nodes": plan.nodes,
            "runs": {str(k): v for k, v in plan.runs.items()},
            "concurrent": plan.concurrent,
            "concurrent_runs": plan.concurrent_runs,
            "idle_s": plan.idle_s,
            "floor_runs": plan.floor_runs,
            "quick": plan.quick,
            "verify": plan.verify,
            "kube": plan.kube,
            "auth": plan.auth,
        },
    }


def _run_json(r: Run) -> dict[str, Any]:
    return {
        "size": r.size,
        "method": r.method,
        "name": r.name,
        "uid": r.uid,
        "t0": r.t0,
        "stored_s": r.t_ack - r.t0,
        "duration_s": r.duration_s,
        "missing": r.missing,
        "verify_errors": r.verify_errors,
        "apply": report.summary(r.apply_latencies()),
        "recover": report.summary(r.recover_latencies()),
        "apply_s": r.apply_latencies(),
        "recover_s": r.recover_latencies(),
        "object_gone_s": (r.object_gone - r.t1) if r.object_gone else None,
        "trace": r.trace,
        "flow_s": r.flow_latencies(),
        "probe_errors": r.probe_errors,
    }


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    plan = parse(argv)
    if os.geteuid() != 0:
        print("bench needs root: it creates network namespaces and reads nftables", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.time()
    load_start = os.getloadavg()
    session = Session(plan)
    raw: dict[str, Any] | None = None
    code = 0
    print(
        f"chaosbus bench ({'quick' if plan.quick else 'full'}): sizes {plan.sizes} over {plan.nodes} node "
        f"injectors, NATS auth {'on' if plan.auth else 'off'}; "
        f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}",
        flush=True,
    )
    try:
        session.setup()
        raw = asyncio.run(session.measure())
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        code = 130
    except Exception as e:
        print(f"\nbench failed: {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        left = session.teardown()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    print("cleanup: " + ("nothing left behind" if not left else "LEFT BEHIND: " + ", ".join(left)), flush=True)
    if raw is None:
        return code or 1
    sections = figures.build(plan, raw)
    try:
        skew_raw = bench_timeskew.measure(10 if plan.quick else 50)
    except Exception as e:
        print(f"\nTimeChaos bench failed: {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    else:
        sections.append(bench_timeskew.rows(skew_raw))
        raw["timechaos"] = skew_raw
    try:
        sweep_raw = bench_sweep.measure(SWEEP_NETNS, 2 if plan.quick else 5)
    except Exception as e:
        print(f"\norphan sweep bench failed: {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    else:
        sections.append(bench_sweep.rows(sweep_raw))
        raw["sweep"] = sweep_raw
    why = bench_gosql.missing()
    if why is not None:
        print(f"\nGolangChaos bench skipped: {why}", file=sys.stderr)
    else:
        try:
            gosql_raw = bench_gosql.measure(10 if plan.quick else 50)
        except Exception as e:
            print(f"\nGolangChaos bench failed: {type(e).__name__}: {e}", file=sys.stderr)
            code = 1
        else:
            sections.append(bench_gosql.rows(gosql_raw))
            raw["golangchaos"] = gosql_raw
    if plan.kube:
        from bench import bench_kube

        try:
            kube_raw = bench_kube.measure(10 if plan.quick else 30, (1, 10) if plan.quick else (1, 100))
        except Exception as e:
            print(f"\nbench through the API server failed: {type(e).__name__}: {e}", file=sys.stderr)
            code = 1
        else:
            sections.append(bench_kube.rows(kube_raw))
            raw["kube"] = kube_raw
        from bench import bench_kube_node

        why = bench_kube_node.missing()
        if why is not None:
            print(f"\nbench on a real node skipped: {why}", file=sys.stderr)
        else:
            try:
                node_raw = bench_kube_node.measure(5 if plan.quick else 10, 10 if plan.quick else 100)
            except Exception as e:
                print(f"\nbench on a real node failed: {type(e).__name__}: {e}", file=sys.stderr)
                code = 1
            else:
                sections.append(bench_kube_node.rows(node_raw))
                raw["kube_node"] = node_raw
    print()
    print(report.render(sections))
    meta = _meta(plan, started)
    meta["loadavg_at_start"] = load_start
    doc = {
        "meta": meta,
        "figures": report.to_json(sections),
        "floors": {k: report.summary(v) for k, v in raw["floors"].items()},
        "runs": [_run_json(r) for r in raw["runs"]],
        "concurrent": raw["concurrent"],
        "cli": raw["cli"],
        "resources": raw["resources"],
        "profile": raw.get("profile"),
        "monitor_overflows": raw["monitor_overflows"],
        "dead_services": raw["dead_services"],
        "leftovers": left,
        "log": session.log,
        "kube": raw.get("kube"),
        "security": raw.get("security"),
        "timechaos": raw.get("timechaos"),
    }
    plan.out.parent.mkdir(parents=True, exist_ok=True)
    plan.out.write_text(json.dumps(report.clean(doc), indent=1))
    print(f"\nload average at end {meta['loadavg_at_end'][0]:.2f}; took {meta['seconds']:.0f}s; JSON: {plan.out}")
    if raw.get("profile"):
        _print_profile(raw["profile"])
    if raw["dead_services"]:
        print(f"services that died during the run: {raw['dead_services']}", file=sys.stderr)
        return 1
    return 1 if left or code else 0


def _print_profile(profile: dict[str, Any]) -> None:
    for tag, services in profile.items():
        for name, summary in services.items():
            print(f"\nprofile {name} during {tag} (py-spy, share of samples): own time")
            for frame, share in summary.get("own", [])[:8]:
                print(f"  {share * 100:5.1f}%  {frame}")
            print("  inclusive (chaosbus frames):")
            for frame, share in summary.get("inclusive", [])[:10]:
                print(f"  {share * 100:5.1f}%  {frame}")


if __name__ == "__main__":
    sys.exit(main())
