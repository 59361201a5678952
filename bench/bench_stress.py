"""StressChaos cost: apply -> stressors running and recovery per target (p50/p99, 1 and 100 targets).

`python -m bench.bench_stress [--sizes 1,100]` (root, stress-ng). Each target is a `sleep` that is
PID 1 of its own PID and mount namespaces in its own cgroup, as `chaosbus pod run` makes it,
through the stress fault exactly as the injector calls it, one target after another. Apply is timed
until the fault returns: by then stress-ng has been exec'd inside the target's cgroup and PID
namespace (the helper's status pipe closed on exec). The stressor is deliberately light
(`--cpu 1 --cpu-load 1`): 100 full stressors on 2 cores would measure the contention, not chaosbus.

Nothing is left behind: targets, stressors and cgroups go even when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

from bench import podlab
from chaosbus.common import cgroups, podexec
from chaosbus.common.messages import Stress, Stressor, TargetAction
from chaosbus.injector import faults, runtime


def ms(values: list[float]) -> str:
    return podlab.ms(values, digits=1)


def _command_pid(shim: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{shim.pid}/task/{shim.pid}/children") as f:
            kids = f.read().split()
        if kids:
            return int(kids[0])
        time.sleep(0.005)
    raise RuntimeError("a target did not start")


@contextlib.contextmanager
def targets(n: int, tag: str) -> Iterator[list[int]]:
    made: list[tuple[cgroups.PodCgroup, subprocess.Popen[bytes]]] = []
    try:
        for i in range(n):
            cg = cgroups.create(f"cbbench-{tag}-{i}")
            shim = subprocess.Popen(
                podexec.command(["sleep", "600"], cgroups=cg.dirs, new_pidns=True, new_mountns=True),
                start_new_session=True,
            )
            made.append((cg, shim))
        yield [_command_pid(shim) for _, shim in made]
    finally:
        for cg, shim in made:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shim.pid, signal.SIGKILL)
            shim.wait()
            cgroups.remove(cg)


def apply_recover(n: int, tag: str) -> dict[str, list[float]]:
    fault = faults.get("stress")
    spec = Stress(stressors=[Stressor(name="cpu", args=["--cpu", "1", "--cpu-load", "1"])])
    applied, recovered = [], []
    with targets(n, tag) as pids:
        ctxs = []
        for i, pid in enumerate(pids):
            action = TargetAction(
                target_id=f"bench/{tag}-{i}", op="apply", container_ids=[f"process://{pid}"], fault=spec
            )
            ctxs.append(
                faults.FaultContext(
                    f"bench-{tag}",
                    "bench",
                    "bench",
                    action,
                    [runtime.resolve(f"process://{pid}")],
                    deadline=time.time() + 300,
                )
            )
        try:
            for c in ctxs:
                t = time.perf_counter()
                fault.apply(c, spec)
                applied.append(time.perf_counter() - t)
        finally:
            for c in ctxs:
                t = time.perf_counter()
                fault.recover(c, spec)
                recovered.append(time.perf_counter() - t)
    return {"apply": applied, "recover": recovered}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.bench_stress", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--sizes", default="1,100")
    args = p.parse_args(argv)
    if os.geteuid() != 0 or shutil.which("stress-ng") is None:
        sys.exit("bench_stress needs root (cgroups, namespaces) and stress-ng")
    tag = f"{random.getrandbits(16):04x}"
    for size in [int(s) for s in args.sizes.split(",")]:
        r = apply_recover(size, f"{tag}s{size}")
        print(f"StressChaos {size:>4} target(s): apply->stressors running {ms(r['apply'])}; recover {ms(r['recover'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
