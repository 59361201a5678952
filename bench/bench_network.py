"""NetworkChaos shaping cost per target: apply and recover time (p50/p99) for 1, 10 and 100 target
pods, against one bare netlink operation measured in the same run on the same kind of namespace.

`python -m bench.bench_network [--sizes 1,10,100] [--samples 200]` (root). Each size gets that many
process pods (netns + veth on a private bridge, a `sleep` process as the container), and every
target gets a NetworkChaos bandwidth rule towards two other pods, through the network-shaping
fault exactly as the injector calls it. Reported per target:

- apply / recover, sequential: one target at a time (the latency of one target);
- apply / recover, batch: all targets at once on 32 threads (the injector's parallelism), as wall
  time per target (what a 100-pod experiment costs the node);
- the floor: one netlink request + ack (a tbf root replaced) on a cached socket in a pod netns,
  the same with a fresh socket per request, and one `nsenter tc` process (Chaos Mesh's way).

Nothing is left behind: pods, bridge and qdiscs are removed even when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chaosbus.cli import podnet
from chaosbus.common.messages import Shaping, TargetAction, TbfParams
from chaosbus.injector import faults, runtime
from chaosbus.injector.backends import tcdev
from chaosbus.injector.backends._glue import tcwire
from chaosbus.injector.backends._glue.netnslink import NetnsLink
from chaosbus.injector.backends.kit import process_backends

SUBNET = ipaddress.IPv4Network("10.218.0.0/16")
PARALLEL = 32
SPEC = TbfParams(rate=10_000_000 // 8, limit=40_000, buffer=10_000)


@dataclass
class Pod:
    name: str
    ip: str
    netns: str
    proc: subprocess.Popen[bytes]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return f"{pct(values, 0.5) * 1e3:7.3f} / {pct(values, 0.99) * 1e3:7.3f}"


@contextlib.contextmanager
def pods(count: int) -> Iterator[list[Pod]]:
    tag = f"{os.getpid() % 100000}"
    bridge, made = f"cbbn{tag}", []
    gateway = str(SUBNET.network_address + 1)
    try:
        for i in range(count):
            name = f"cbbn{tag}-{i}"
            ip = str(SUBNET.network_address + 256 + i)
            net = podnet.create_pod_network(name, bridge, f"{ip}/{SUBNET.prefixlen}", gateway)
            proc = podnet.spawn_in_netns(["sleep", "3600"], name)
            made.append(Pod(name, ip, net.netns_path, proc))
        yield made
    finally:
        for pod in made:
            pod.proc.kill()
            pod.proc.wait()
            podnet.delete_pod_network(pod.name)
        podnet.delete_bridge_if_unused(bridge)


def context(uid: str, pod: Pod, spec: Shaping) -> faults.FaultContext:
    cid = f"process://{pod.proc.pid}"
    action = TargetAction(target_id=f"bench/{pod.name}", op="apply", container_ids=[cid], fault=spec)
    return faults.FaultContext(
        experiment_uid=uid, experiment_name=uid, namespace="bench", action=action, containers=[runtime.resolve(cid)]
    )


def spec_for(all_pods: list[Pod], i: int) -> Shaping:
    peers = [all_pods[(i + 1) % len(all_pods)].ip, all_pods[(i + 2) % len(all_pods)].ip]
    return Shaping(action="bandwidth", tbf=SPEC, pod_ip=all_pods[i].ip, peers=peers)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_size(every: list[Pod], n: int, samples: int) -> dict[str, list[float]]:
    fault = faults.get("network-shaping")
    specs = [spec_for(every, i) for i in range(n)]
    ctxs = [(context("bench", every[i], specs[i]), specs[i]) for i in range(n)]
    out: dict[str, list[float]] = {"cold_apply": [], "apply": [], "recover": [], "batch_apply": [], "batch_recover": []}
    process_backends().tc.links.close_all()  # the first round opens every netns link: "cold"
    rounds = 1 + max(1, -(-samples // n))

    def apply(cs: tuple[faults.FaultContext, Shaping]) -> str:
        return fault.apply(*cs)

    def recover(cs: tuple[faults.FaultContext, Shaping]) -> str:
        return fault.recover(*cs)

    for r in range(rounds):
        for cs in ctxs:
            out["cold_apply" if r == 0 else "apply"].append(timed(functools.partial(apply, cs)))
        for cs in ctxs:
            out["recover"].append(timed(functools.partial(recover, cs)))
    batch_rounds = max(3, rounds // 4)
    with ThreadPoolExecutor(PARALLEL) as pool:
        for _ in range(batch_rounds):
            out["batch_apply"].append(timed(lambda: list(pool.map(apply, ctxs))) / len(ctxs))
            out["batch_recover"].append(timed(lambda: list(pool.map(recover, ctxs))) / len(ctxs))
    return out


def floors(pod: Pod, samples: int) -> dict[str, list[float]]:
    """One netlink request + ack in the pod netns, cached socket vs fresh socket, and `nsenter tc`."""
    out: dict[str, list[float]] = {"netlink_cached": [], "netlink_fresh": [], "nsenter_tc": []}

    async def replace_root(ipr: Any) -> None:
        index, _ = tcdev.find_device("eth0", "")
        await tcdev.send(ipr, tcwire.add_stage(index, _tbf_root()))

    async def drop_root(ipr: Any) -> None:
        index, _ = tcdev.find_device("eth0", "")
        await tcdev.send(ipr, tcwire.delete_root(index), missing_ok=True)

    link = NetnsLink(pod.netns)
    try:
        for _ in range(samples):
            out["netlink_cached"].append(timed(lambda: link.run(replace_root)))
            link.run(drop_root)
    finally:
        link.close()
    for _ in range(max(20, samples // 4)):

        def fresh() -> None:
            one = NetnsLink(pod.netns)
            try:
                one.run(replace_root)
            finally:
                one.close()

        out["netlink_fresh"].append(timed(fresh))
        cleanup = NetnsLink(pod.netns)
        cleanup.run(drop_root)
        cleanup.close()
    tc = [
        "nsenter",
        f"--net={pod.netns}",
        "tc",
        "qdisc",
        "replace",
        "dev",
        "eth0",
        "root",
        "handle",
        "cbff:",
        "tbf",
        "rate",
        "10mbit",
        "burst",
        "10000",
        "limit",
        "40000",
    ]
    for _ in range(max(20, samples // 4)):
        out["nsenter_tc"].append(timed(lambda: subprocess.run(tc, check=True)))
        subprocess.run(["nsenter", f"--net={pod.netns}", "tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
    return out


def _tbf_root() -> Any:
    from chaosbus.injector.backends.tcplan import Stage

    return Stage(handle=0xCBFF0000, parent=0xFFFFFFFF, owner="bench", tbf=SPEC)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.bench_network", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,10,100", help="target counts (default 1,10,100)")
    p.add_argument("--samples", type=int, default=200, help="sequential samples per size (default 200)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench_network needs root (network namespaces, traffic control)")
    sizes = [int(s) for s in args.sizes.split(",")]
    caps = tcdev.probe()
    print(
        f"kernel {os.uname().release}; tc kinds: "
        + ", ".join(f"{k} {'yes' if v is None else 'NO'}" for k, v in caps.items())
    )
    with pods(max(sizes) + 2) as every:
        base = floors(every[0], args.samples)
        rows = {n: run_size(every, n, args.samples) for n in sizes}
    floor = pct(base["netlink_cached"], 0.5)
    print("\nper target, milliseconds p50 / p99 (batch: wall time / targets, 32 threads)")
    print(
        f"{'targets':>7} | {'apply (cold)':>17} | {'apply':>17} | {'recover':>17} | {'batch apply':>17} | "
        f"{'batch recover':>17} | apply/op  recover/op"
    )
    for n, r in rows.items():
        ratios = f"{pct(r['apply'], 0.5) / floor:7.1f}x  {pct(r['recover'], 0.5) / floor:7.1f}x"
        print(
            f"{n:>7} | {ms(r['cold_apply'])} | {ms(r['apply'])} | {ms(r['recover'])} | {ms(r['batch_apply'])} | "
            f"{ms(r['batch_recover'])} | {ratios}"
        )
    print(
        "(cold: the first apply in a netns, which opens its link: thread + setns + socket; the link then "
        "stays while a rule is active and lingers 30 s after)"
    )
    print("\none bare netlink operation (tbf root replace + ack):")
    print(f"  pyroute2, cached socket in the netns (the ratio's denominator): {ms(base['netlink_cached'])}")
    print(f"  pyroute2, fresh thread + setns + socket per request:           {ms(base['netlink_fresh'])}")
    print(f"  `nsenter --net tc qdisc replace` (Chaos Mesh's way):           {ms(base['nsenter_tc'])}")
    print(f"samples: {len(rows[sizes[0]]['apply'])} warm sequential per size; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
