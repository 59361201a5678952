"""What signed commands cost: the scheduler's seal plus an injector's check (signature, claims,
replay book) per node command of 1, 10 and 100 targets, in this process; and apply -> in effect
with the scheduler and injectors restarted unsigned (CHAOSBUS_UNSIGNED=1) and signed in
alternating rounds of the same session, so the two differ in nothing else.
"""

from __future__ import annotations

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
    actions = [m.TargetAction(target_id=f"bench/pod-{i}", op="apply", pod_uid=f"uid-{i:08d}", namespace="bench",
                              pod_name=f"pod-{i}", container_ids=[f"process://{10000 + i}"],
                              fault=m.Partition(rules=[m.PartitionRule(chain="output", peers=peers)]))
               for i in range(targets)]
    return m.NodeCommand(command_id="exp.0123456789ab", experiment_uid="exp", generation=1, kind="NetworkChaos",
                         namespace="bench", name="b", node="node-0", issued_at=time.time(), actions=actions)


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
        out[str(size)] = {"bytes": len(payload), "seal": summary(seal), "check": summary(check),
                          "both": summary([a + b for a, b in zip(seal, check, strict=True)])}
    return out


async def on_off(cluster: Cluster, h: Harness, runs: dict[int, int], log_level: str, say: Any,
                 rounds: int = 2) -> dict[str, dict[str, list[float]]]:
    """Per-target apply -> in effect latencies, per size, unsigned and signed in alternating rounds
    (off, on, off, on, ...; restarts between), so a machine whose load drifts during the session
    weighs on both alike.
    """
    out: dict[str, dict[str, list[float]]] = {}
    for r in range(rounds):
        for phase in ("off", "on"):
            say(f"security {phase} (round {r + 1}/{rounds}): restarting the scheduler and injectors "
                f"{'unsigned' if phase == 'off' else 'signing'}; delete runs per size: {runs}")
            cluster.restart_signing(unsigned=phase == "off", log_level=log_level)
            await h.run(min(runs), "delete", f"sec-{phase}{r}-warmup")
            for size, n in runs.items():
                done: list[Run] = [await h.run(size, "delete", f"sec-{phase}{r}-{size}-{i}") for i in range(n)]
                out.setdefault(str(size), {}).setdefault(phase, []).extend(
                    x for run in done for x in run.apply_latencies())
    return out


def rows(raw: dict[str, Any]) -> Section:
    sec = Section("security: signed commands (Ed25519) vs unsigned, same session")
    for size, c in raw.get("cost", {}).items():
        both = c["both"]
        row = Row(f"security.sign_verify.{size}", f"seal + check, one {size}-target command ({c['bytes']} B)",
                  str(both["n"]), fmt_s(both["p50"]), fmt_s(both["p99"]), data=c)
        row.extra = f"seal p50 {fmt_s(c['seal']['p50'])}, check p50 {fmt_s(c['check']['p50'])}"
        sec.rows.append(row)
    for size, phases in raw.get("apply", {}).items():
        on, off = phases.get("on", []), phases.get("off", [])
        row = Row(f"security.apply.{size}", f"apply -> in effect per target, {size} target(s), signed",
                  f"{len(on)}", fmt_s(pct(on, 50)), fmt_s(pct(on, 99)),
                  data={"on": summary(on), "off": summary(off)})
        over = pct(on, 50) / pct(off, 50) - 1.0 if on and off else float("nan")
        row.extra = f"unsigned p50 {fmt_s(pct(off, 50))} p99 {fmt_s(pct(off, 99))}; signed {over:+.0%} at p50"
        row.target = f"<= +{TARGET_OVERHEAD:.0%} at p50"
        row.verdict = "met" if over <= TARGET_OVERHEAD else "missed"
        row.data["overhead_p50"] = over
        sec.rows.append(row)
    return sec
