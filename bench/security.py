"""What signed commands cost: the scheduler's seal plus an injector's check (signature, claims,
replay book) per node command of 1, 10 and 100 targets, in this process; and apply -> in effect
with the scheduler and injectors restarted unsigned (CHAOSBUS_UNSIGNED=1) and signed, interleaved
repetition by repetition on the same targets, so the two differ in nothing else. The verdict is
the median of the per-repetition ratios of signed to unsigned medians: robust to load that
changes during the session, which pooled percentiles of a shared machine are not.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.cluster import Cluster
from bench.report import Row, Section, fmt_s, pct, summary
from bench.scenarios import Harness, Run
from chaosbus.common import messages as m
from chaosbus.common import signing, subjects

COMMAND_SIZES = (1, 10, 100)
TARGET_OVERHEAD = 0.10  # signed apply -> in effect at most 10 % above unsigned


def node_command(targets: int) -> m.NodeCommand:
    """A partition command as the scheduler sends it: per target its pod and a peer list."""
    peers = [f"10.213.{i // 250}.{i % 250 + 1}" for i in range(10)]
    actions = [
        m.TargetAction(
            target_id=f"bench/pod-{i}",
            op="apply",
            pod_uid=f"uid-{i:08d}",
            namespace="bench",
            pod_name=f"pod-{i}",
            container_ids=[f"process://{10000 + i}"],
            fault=m.Partition(rules=[m.PartitionRule(chain="output", peers=peers)]),
        )
        for i in range(targets)
    ]
    return m.NodeCommand(
        command_id="exp.0123456789ab",
        experiment_uid="exp",
        generation=1,
        kind="NetworkChaos",
        namespace="bench",
        name="b",
        node="node-0",
        issued_at=time.time(),
        actions=actions,
    )


def signing_cost(iterations: int = 2000) -> dict[str, dict[str, Any]]:
    """Per command size: seconds to seal, to check, and both, each measured per command."""
    key = Ed25519PrivateKey.generate()
    signer = signing.Signer(key)
    trust = signing.Trust.of([signing.TrustedKey(signer.kid, "scheduler", key.public_key())])
    subject = subjects.command_subject("node-0")
    out = {}
    for size in COMMAND_SIZES:
        cmd = node_command(size)
        payload = signing._encoder.encode(cmd)
        book = signing.ReplayBook()
        seal, check = [], []
        for _ in range(max(50, iterations // size)):
            t0 = time.perf_counter()
            data = signer.seal(subject, payload, ttl_s=300.0)
            t1 = time.perf_counter()
            opened = trust.open(data, aud=subject, role="scheduler", now=time.time())
            book.check_once(opened)
            book.mark(opened.kid, opened.claims.seq, opened.claims.exp)
            t2 = time.perf_counter()
            seal.append(t1 - t0)
            check.append(t2 - t1)
        out[str(size)] = {
            "bytes": len(payload),
            "seal": summary(seal),
            "check": summary(check),
            "both": summary([a + b for a, b in zip(seal, check, strict=True)]),
        }
    return out


def plan(sizes: list[int], runs_smallest: int, quick: bool) -> tuple[dict[int, int], int]:
    """(runs per size in each half, repetitions); each repetition one unsigned and one signed
    half. Quick: five runs at one target (a half's median of three moved with a single slow run),
    one at ten. Full: eight repetitions of forty runs at one target, twelve at ten and six at a
    hundred. A half's median moves mostly with the jitter of its single runs (a run's latency
    varies by about a fifth on the 2-core machine, and a run's targets move together), so long
    halves resolve more than many short ones: each half also pays a restart of eleven services,
    about three seconds. With twelve repetitions of fifteen runs the paired median at one target
    moved between 1.01 and 1.13 from one quiet full run to the next; with four runs at ten and two
    at a hundred, single pairs there spread from 0.5 to 1.5.
    """
    per_half = {s: max(1, 5 // s) if quick else (40 if s == 1 else max(6, 120 // s)) for s in sizes}
    return per_half, max(2, min(8, runs_smallest // 2))


def interval(ratios: list[float], level: float = 0.9, resamples: int = 2000) -> tuple[float, float]:
    """A bootstrap interval of the median of `ratios` (fixed seed: the same data, the same interval):
    how far the paired median could move with other repetitions of the same session.
    """
    if not ratios:
        return float("nan"), float("nan")
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    tail = (1.0 - level) / 2
    return medians[int(tail * resamples)], medians[min(resamples - 1, int((1.0 - tail) * resamples))]


async def on_off(
    cluster: Cluster, h: Harness, per_half: dict[int, int], reps: int, log_level: str, say: Any
) -> dict[str, dict[str, Any]]:
    """Per-target apply -> in effect latencies, per size, unsigned and signed, interleaved: each
    repetition has an unsigned and a signed half on the same targets (the scheduler and injectors
    restarted for each), in ABBA order (off-on, on-off, ...), so load that drifts during the
    session, and whichever half comes second, weigh on both alike. Each repetition also gives a
    pair of medians, whose ratio does not depend on the load of the other repetitions.
    """
    out: dict[str, dict[str, Any]] = {str(s): {"on": [], "off": [], "pairs": []} for s in per_half}
    for r in range(reps):
        order = ("off", "on") if r % 2 == 0 else ("on", "off")
        medians: dict[tuple[int, str], float] = {}
        for phase in order:
            say(
                f"security {r + 1}/{reps} {phase}: scheduler and injectors restarted "
                f"{'unsigned' if phase == 'off' else 'signing'}; runs per size {per_half}"
            )
            cluster.restart_signing(unsigned=phase == "off", log_level=log_level)
            # Every target of the largest size once, uncounted: the first command after a restart
            # takes the restarted scheduler's and injectors' first paths (it paid ~0.2 s when the
            # injectors probed nftables on their first fault; bench_restart.py), in both halves
            # alike, and a half's median must not depend on how many of its runs were first ones.
            await h.run(max(per_half), "delete", f"sec-{phase}{r}-warmup")
            for size, n in per_half.items():
                done: list[Run] = [await h.run(size, "delete", f"sec-{phase}{r}-{size}-{i}") for i in range(n)]
                lat = [x for run in done for x in run.apply_latencies()]
                out[str(size)][phase].extend(lat)
                medians[(size, phase)] = pct(lat, 50)
        for size in per_half:
            out[str(size)]["pairs"].append([medians[(size, "off")], medians[(size, "on")]])
    return out


def _ratio(on: float, off: float) -> float:
    return on / off if off > 0 and not math.isnan(on) and not math.isnan(off) else float("nan")


def rows(raw: dict[str, Any]) -> Section:
    sec = Section("security: signed commands (Ed25519) vs unsigned, interleaved in one session")
    for size, c in raw.get("cost", {}).items():
        both = c["both"]
        row = Row(
            f"security.sign_verify.{size}",
            f"seal + check, one {size}-target command ({c['bytes']} B)",
            str(both["n"]),
            fmt_s(both["p50"]),
            fmt_s(both["p99"]),
            data=c,
        )
        row.extra = f"seal p50 {fmt_s(c['seal']['p50'])}, check p50 {fmt_s(c['check']['p50'])}"
        sec.rows.append(row)
    for size, phases in raw.get("apply", {}).items():
        on, off = phases.get("on", []), phases.get("off", [])
        pairs = [(a, b) for a, b in phases.get("pairs", []) if not (math.isnan(a) or math.isnan(b))]
        ratios = [_ratio(b, a) for a, b in pairs]
        paired = pct(ratios, 50) if pairs else float("nan")
        low, high = interval(ratios)
        row = Row(
            f"security.apply.{size}",
            f"apply -> in effect per target, {size} target(s), signed",
            f"{len(on)}",
            fmt_s(pct(on, 50)),
            fmt_s(pct(on, 99)),
            data={"on": summary(on), "off": summary(off), "pairs": pairs},
        )
        p50, p99 = _ratio(pct(on, 50), pct(off, 50)), _ratio(pct(on, 99), pct(off, 99))
        row.extra = (
            f"unsigned p50 {fmt_s(pct(off, 50))} p99 {fmt_s(pct(off, 99))}; signed/unsigned p50 "
            f"{p50:.2f}, p99 {p99:.2f}, median of {len(pairs)} paired repetitions {paired:.2f} "
            f"(90 % bootstrap interval {low:.2f}-{high:.2f})"
        )
        row.target = f"<= {1 + TARGET_OVERHEAD:.2f} (paired median)"
        row.verdict = "met" if paired <= 1 + TARGET_OVERHEAD else "missed"
        row.data.update(
            ratio_p50=p50, ratio_p99=p99, ratio_paired=paired, paired_interval=[low, high], overhead_p50=p50 - 1.0
        )
        sec.rows.append(row)
    return sec
