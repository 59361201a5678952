"""`chaosbus guard`: the global SLO guard. It evaluates one PromQL objective every `--interval`
(the same query and comparator as a `type: Prometheus` StatusCheck) and, when the objective is
not met `--failures` times in a row, engages the kill switch itself: every injector recovers every
fault and refuses new ones, with the reason naming the guard, the query and what it returned.

It holds the operator key (the kill switch is signed with it, as `chaosbus halt` signs it) and
connects as the `cli` identity. It only ever halts: resuming stays the operator's decision. After a
halt it re-arms once the objective is met again, so a resume while the objective is still breached
is not fought; an objective breached again later halts again. A halt already in force is left as
it is (its reason is not overwritten).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from chaosbus.common import bus as busmod
from chaosbus.common import logging as cblog
from chaosbus.common import metrics as cbmetrics
from chaosbus.common import promquery, signing
from chaosbus.common.crd.orchestration import StatusCheckPrometheus
from chaosbus.common.halt import current, set_halt

log = cblog.get("guard")


@dataclass
class Guard:
    """When to halt: pure, fed one evaluation at a time."""

    failures: int
    streak: int = 0
    armed: bool = True

    def observe(self, ok: bool) -> bool:
        """Whether this evaluation engages the kill switch."""
        if ok:
            self.streak, self.armed = 0, True
            return False
        self.streak += 1
        if self.armed and self.streak >= self.failures:
            self.armed = False
            return True
        return False


class GuardMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.met = Gauge(
            "chaosbus_guard_objective_met",
            "1 while the guard's objective is met, 0 while not",
            ["guard"],
            registry=self.registry,
        )
        self.halts = Counter(
            "chaosbus_guard_halts_total", "Kill-switch halts the guard engaged", ["guard"], registry=self.registry
        )


def reason_for(name: str, spec: StatusCheckPrometheus, detail: str) -> str:
    assert spec.comparator is not None
    return (
        f"SLO guard {name}: objective `{spec.query}` {spec.comparator.criteria} {spec.comparator.value:g} "
        f"not met ({detail})"
    )


async def halt_unless_halted(url: str, reason: str, signer: signing.Signer | None, by: str) -> bool:
    """Engage the kill switch unless it already is; True if this call engaged it."""
    bus = await busmod.connect(url, "chaosbus-guard", connect_timeout=2.0, give_up_after=10.0)
    try:
        state = await current(bus)
        if state is not None and state.halted:
            log.warning(
                "SLO guard breached while already halted", reason=reason, halted_by=state.by, halt_reason=state.reason
            )
            return False
        await set_halt(bus, halted=True, reason=reason, signer=signer, by=by)
        return True
    finally:
        await bus.close()


async def run(
    url: str,
    spec: StatusCheckPrometheus,
    *,
    name: str,
    interval: float,
    timeout: float,
    failures: int,
    signer: signing.Signer | None,
    metrics_port: int | None,
) -> int:
    metrics = GuardMetrics()
    metrics.met.labels(name)
    metrics.halts.labels(name)
    port = cbmetrics.serve(metrics.registry, metrics_port) if metrics_port is not None else None
    guard = Guard(failures)
    by = f"guard {name}@{socket.gethostname()}"
    log.info(
        "SLO guard running",
        guard=name,
        query=spec.query,
        endpoint=spec.endpoint,
        interval_s=interval,
        failures=failures,
        metrics_port=port,
    )
    while True:
        ok, detail = await asyncio.to_thread(promquery.check, spec, timeout)
        metrics.met.labels(name).set(1 if ok else 0)
        if not ok:
            log.warning("SLO guard objective not met", guard=name, detail=detail, streak=guard.streak + 1)
        if guard.observe(ok):
            reason = reason_for(name, spec, detail)
            try:
                if await halt_unless_halted(url, reason, signer, by):
                    metrics.halts.labels(name).inc()
                    log.warning("SLO guard engaged the kill switch", guard=name, reason=reason)
            except Exception as e:  # NATS unreachable: try again at the next breached evaluation
                guard.armed = True
                log.exception("SLO guard could not engage the kill switch", guard=name, error=str(e))
        await asyncio.sleep(interval)
