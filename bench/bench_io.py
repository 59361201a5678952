"""IOChaos cost on a real target: apply -> in effect and recovery (p50/p99), and what iofs costs
the operations no rule matches, against the same operations on the same files without it, in the
same run: sequential read throughput and open+stat latency.

`python -m bench.bench_io [--runs 20] [--mib 64] [--stats 2000] [--rounds 10]` (root, /dev/fuse, native/build/iofs).
The target is a `sleep` that is PID 1 of its own PID and mount namespaces with a volume, as
`chaosbus pod run -v` makes it. Apply and recover go through the io fault exactly as the injector
calls it. Apply is in effect when a read the rule matches fails with EIO, measured from a prober
already running inside the target's mount namespace (it reads every millisecond); recovery is
timed until the fault returns (the mount is detached by then) and checked in the mount table.
The same for a second experiment on a volume already mounted (its rule confirmed by iofs on its
control socket; its recovery leaves the mount to the first).
Overhead: the prober reads a file through the volume (iofs, with a rule in force that matches
another path) and through the host directory beneath it (direct), alternately, page cache warm;
the output says whether the kernel's FUSE passthrough served those reads (iofs falls back to
serving them itself where the kernel has none). Then iofs is mounted over a subdirectory of the
volume only (what mounting over the fixed prefix of the rules' globs would do), and open+stat is
timed outside that subtree and inside it on a file no rule matches, each against direct.

Nothing is left behind: the target, its mount and iofs go even when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chaosbus.common import podexec
from chaosbus.common.crd.iochaos import METHODS
from chaosbus.common.messages import IO, TargetAction
from chaosbus.injector import faults, runtime
from chaosbus.injector.backends import iofs
from chaosbus.injector.backends._glue.native import native_dir

VOLUME = "/bench-data"
READ = 1 << METHODS.index("read")

# Runs inside the target's mount namespace. "wait PATH": read PATH every ms until it fails (or,
# with "ok", succeeds), print the moment (CLOCK_MONOTONIC, comparable across processes).
# "seq A B MIB ROUNDS": MiB/s reading A then B, alternately. "stat A B N": open+close+stat
# latencies of A and B, interleaved.
PROBER = textwrap.dedent("""
    import json, os, sys, time
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "wait":
            want_fail = cmd[2] == "fail"
            while True:
                try:
                    fd = os.open(cmd[1], os.O_RDONLY)
                    try:
                        os.read(fd, 16)
                        failed = False
                    finally:
                        os.close(fd)
                except OSError:
                    failed = True
                if failed == want_fail:
                    break
                time.sleep(0.001)
            print(json.dumps(time.monotonic()), flush=True)
        elif cmd[0] == "seq":
            a, b, mib, rounds = cmd[1], cmd[2], int(cmd[3]), int(cmd[4])
            out = {a: [], b: []}
            for _ in range(rounds):
                for path in (a, b):
                    fd = os.open(path, os.O_RDONLY)
                    t = time.perf_counter()
                    while os.read(fd, 1 << 20):
                        pass
                    out[path].append(mib / (time.perf_counter() - t))
                    os.close(fd)
            print(json.dumps(out), flush=True)
        elif cmd[0] == "stat":
            a, b, n = cmd[1], cmd[2], int(cmd[3])
            out = {a: [], b: []}
            for _ in range(n):
                for path in (a, b):
                    t = time.perf_counter()
                    os.close(os.open(path, os.O_RDONLY))
                    os.stat(path)
                    out[path].append(time.perf_counter() - t)
            print(json.dumps(out), flush=True)
""")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


@contextlib.contextmanager
def target(host: Path) -> Iterator[int]:
    shim = subprocess.Popen(
        podexec.command(["sleep", "3600"], new_pidns=True, new_mountns=True, volumes=[f"{host}:{VOLUME}"]),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        kids: list[str] = []
        while not kids and time.monotonic() < deadline:
            with open(f"/proc/{shim.pid}/task/{shim.pid}/children") as f:
                kids = f.read().split()
            time.sleep(0.005)
        if not kids:
            raise RuntimeError("the target did not start")
        yield int(kids[0])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shim.pid, signal.SIGKILL)
        shim.wait()


class Prober:
    def __init__(self, pid: int) -> None:
        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(pid), "-m", "--", sys.executable, "-S", "-c", PROBER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def ask(self, line: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def context(pid: int, spec: IO, uid: str) -> faults.FaultContext:
    action = TargetAction(target_id=f"bench/{uid}", op="apply", container_ids=[f"process://{pid}"], fault=spec)
    containers = [runtime.resolve(f"process://{pid}")]
    original = faults.original_state("io", uid, action, containers=containers)
    return faults.FaultContext(uid, "bench", "bench", action, containers, deadline=time.time() + 600, original=original)


def measure(runs: int, mib: int, stats: int, rounds: int = 10) -> dict[str, Any]:
    fault = faults.get("io")
    with tempfile.TemporaryDirectory(prefix="cbbench-io-") as tmp:
        host = Path(tmp) / "vol"
        host.mkdir()
        (host / "hit").write_text("x")
        (host / "outside").write_text("x")
        (host / "also").write_text("x")
        (host / "sub").mkdir()
        (host / "sub" / "hit").write_text("x")
        (host / "sub" / "free").write_text("x")
        with open(host / "big", "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        with target(host) as pid:
            prober = Prober(pid)
            try:
                applied, recovered = [], []
                spec = IO(action="fault", volume_path=VOLUME, path=f"{VOLUME}/hit", methods=READ, errno=5)
                for i in range(runs):
                    ctx = context(pid, spec, f"run{i}")
                    t = time.monotonic()
                    fault.apply(ctx, spec)
                    applied.append(prober.ask(f"wait {VOLUME}/hit fail") - t)
                    t = time.perf_counter()
                    fault.recover(ctx, spec)
                    recovered.append(time.perf_counter() - t)
                    if iofs.mounts_at(pid, VOLUME):
                        raise RuntimeError("recovered, yet iofs is still mounted")
                ctx = context(pid, spec, "overhead")  # a rule in force that no measured path matches
                passthrough = "(kernel passthrough)" in fault.apply(ctx, spec)
                try:
                    # A second experiment on the mounted volume: its rule reaches iofs, which
                    # confirms it once in force, on the control socket.
                    more = IO(action="fault", volume_path=VOLUME, path=f"{VOLUME}/also", methods=READ, errno=5)
                    added, removed = [], []
                    for i in range(runs):
                        c2 = context(pid, more, f"more{i}")
                        t = time.monotonic()
                        fault.apply(c2, more)
                        added.append(prober.ask(f"wait {VOLUME}/also fail") - t)
                        t = time.perf_counter()
                        fault.recover(c2, more)
                        removed.append(time.perf_counter() - t)
                    via, direct = f"{VOLUME}/big", f"{host}/big"
                    seq = prober.ask(f"seq {via} {direct} {mib} {rounds}")
                    lat = prober.ask(f"stat {via} {direct} {stats}")
                finally:
                    fault.recover(ctx, spec)
                # iofs over the subdirectory the rule's glob names, not the whole volume.
                sub = IO(action="fault", volume_path=f"{VOLUME}/sub", path=f"{VOLUME}/sub/hit", methods=READ, errno=5)
                ctx = context(pid, sub, "subtree")
                fault.apply(ctx, sub)
                try:
                    if iofs.mounts_at(pid, f"{VOLUME}/sub") != 1:
                        raise RuntimeError("iofs is not mounted over the subdirectory")
                    outside = prober.ask(f"stat {VOLUME}/outside {host}/outside {stats}")
                    inside = prober.ask(f"stat {VOLUME}/sub/free {host}/sub/free {stats}")
                finally:
                    fault.recover(ctx, sub)
            finally:
                prober.close()
    return {
        "apply": applied,
        "recover": recovered,
        "apply_mounted": added,
        "recover_mounted": removed,
        "seq_fuse": seq[via],
        "seq_direct": seq[direct],
        "stat_fuse": lat[via],
        "stat_direct": lat[direct],
        "passthrough": passthrough,
        "outside_fuse": outside[f"{VOLUME}/outside"],
        "outside_direct": outside[f"{host}/outside"],
        "inside_fuse": inside[f"{VOLUME}/sub/free"],
        "inside_direct": inside[f"{host}/sub/free"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.bench_io", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--stats", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=10, help="sequential reads of each path")
    args = p.parse_args(argv)
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not (native_dir() / "iofs").exists():
        sys.exit("bench_io needs root, /dev/fuse and native/build/iofs (make install)")
    r = measure(args.runs, args.mib, args.stats, args.rounds)
    ms = lambda v: f"p50 {pct(v, 50) * 1e3:.1f} ms, p99 {pct(v, 99) * 1e3:.1f} ms"  # noqa: E731
    us = lambda v: f"p50 {pct(v, 50) * 1e6:.1f} us, p99 {pct(v, 99) * 1e6:.1f} us"  # noqa: E731
    seq_f, seq_d = pct(r["seq_fuse"], 50), pct(r["seq_direct"], 50)
    st_f, st_d = pct(r["stat_fuse"], 50), pct(r["stat_direct"], 50)
    print(
        f"IOChaos apply -> in effect {ms(r['apply'])}; recover {ms(r['recover'])} ({args.runs} runs; "
        f"load average {os.getloadavg()[0]:.1f})"
    )
    print(
        f"IOChaos on a volume already mounted (a second experiment): apply -> in effect {ms(r['apply_mounted'])}; "
        f"recover {ms(r['recover_mounted'])}"
    )
    mode = (
        "the kernel's FUSE passthrough"
        if r["passthrough"]
        else "no kernel FUSE passthrough here (Linux 6.9+ with CONFIG_FUSE_PASSTHROUGH): iofs serves every read"
    )
    print(f"IOChaos passthrough: files no rule matches are read through {mode}")
    print(
        f"IOChaos passthrough, sequential read of {args.mib} MiB: iofs {seq_f:.0f} MiB/s, direct {seq_d:.0f} MiB/s "
        f"({seq_f / seq_d:.0%} of direct; goal >= 50%)"
    )
    print(
        f"IOChaos passthrough, open+close+stat: iofs {us(r['stat_fuse'])}, direct {us(r['stat_direct'])} "
        f"({st_f / st_d:.1f}x direct at p50; goal <= 2x)"
    )
    for where, label in (("outside", "outside the covered subtree"), ("inside", "inside it, no rule matching")):
        f, d = pct(r[f"{where}_fuse"], 50), pct(r[f"{where}_direct"], 50)
        print(
            f"IOChaos iofs over a subdirectory of the volume only, open+close+stat {label}: "
            f"{us(r[f'{where}_fuse'])}, direct {us(r[f'{where}_direct'])} ({f / d:.1f}x direct at p50)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
