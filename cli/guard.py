"""`chaosbus guard`: the global SLO guard. It evaluates one PromQL objective every `interval`
(the same query and comparator as a `type: Prometheus` StatusCheck) and, when the objective is
not met `failures` times in a row, engages the kill switch itself: every injector recovers every
fault and refuses new ones, with the reason naming the guard, the query and what it returned.
The objective comes from flags or from a configuration file (`--config`, what `chaosbus up` and
the cluster Deployment use); a guard whose file does not exist yet waits for it.

It signs with its own key, `guard.key`, which receivers accept for a halt and refuse for a
resume, and connects as the `guard` identity, which may write the kill switch and nothing else.
It only ever halts: resuming stays the operator's decision. After a halt it re-arms once the
objective is met again, so a resume while the objective is still breached is not fought; an
objective breached again later halts again. A halt already in force is left as it is (its reason
is not overwritten).

It keeps one NATS connection, so that a breach halts at once, and connects anew whenever nats-py
closes it for good; /readyz on the metrics port says 503 while it has none (a guard that could not
halt is not ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path

import msgspec
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge

from chaosbus.common import bus as busmod
from chaosbus.common import logging as cblog
from chaosbus.common import metrics as cbmetrics
from chaosbus.common import promquery, service, signing
from chaosbus.common.crd import statuscheck
from chaosbus.common.crd.orchestration import StatusCheckComparator, StatusCheckPrometheus
from chaosbus.common.halt import current, set_halt

log = cblog.get("guard")
CONFIG_FILE = "guard.yaml"  # in the state dir: `chaosbus up` starts a guard when it exists
CONFIG_POLL_S = 5.0
RETRY_S = 1.0


class GuardConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One guard's objective and pace, as flags or a YAML file give them."""

    prometheus: str
    query: str
    criteria: str
    value: float
    name: str = "slo"
    interval: float = 10.0
    timeout: float = 5.0
    failures: int = 2


class BadConfig(Exception):
    """A guard configuration that cannot run; the message names the field."""


def objective(cfg: GuardConfig) -> StatusCheckPrometheus:
    """The configuration checked as a StatusCheck's Prometheus block is, plus the guard's pace."""
    spec = StatusCheckPrometheus(
        endpoint=cfg.prometheus,
        query=cfg.query,
        comparator=StatusCheckComparator(criteria=cfg.criteria, value=cfg.value),
    )
    try:
        statuscheck.validate_prometheus(spec, "guard")
    except statuscheck.InvalidCheck as e:
        raise BadConfig(str(e)) from None
    if cfg.interval <= 0 or cfg.timeout <= 0 or cfg.failures < 1:
        raise BadConfig("interval and timeout must be positive, failures at least 1")
    if not cfg.name.strip():
        raise BadConfig("name: required")
    return spec


def parse_config(text: str, source: str) -> GuardConfig:
    try:
        return msgspec.convert(yaml.safe_load(text), GuardConfig)
    except (yaml.YAMLError, msgspec.ValidationError) as e:
        raise BadConfig(f"{source}: {e}") from None


async def wait_for_config(path: Path) -> GuardConfig:
    """The configuration in `path`, once the file exists (a ConfigMap not created yet: the guard
    runs idle, its /metrics served, instead of failing).
    """
    waiting = False
    while True:
        try:
            text = await asyncio.to_thread(path.read_text)
        except FileNotFoundError:
            if not waiting:
                log.info("SLO guard idle: no configuration yet", config=str(path))
                waiting = True
            await asyncio.sleep(CONFIG_POLL_S)
            continue
        return parse_config(text, str(path))


def guard_signer(path: str | None) -> signing.Signer | None:
    """The guard's own key (--key, else guard.key in the keys dir; None in unsigned mode)."""
    if signing.unsigned_mode():
        return None
    key = Path(path) if path else signing.keys_dir() / "guard.key"
    try:
        return signing.Signer.from_file(key)
    except (OSError, ValueError) as e:
        raise BadConfig(
            f"cannot read the guard key ({e}); `chaosbus up` and `chaosbus keys generate` make guard.key"
        ) from None


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


class Link:
    """The guard's NATS connection: made at start, and made again whenever nats-py closes it for
    good (a server that refuses it after the CONNECT), so the guard never sits on a dead one.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.bus: busmod.Bus | None = None

    def unready(self) -> str:
        """Why a halt could not go out now ("" when it could): what /readyz answers."""
        if self.bus is None or self.bus.nc.is_closed:
            return "no NATS connection (connecting)"
        if not self.bus.nc.is_connected:
            return "NATS connection lost (reconnecting)"
        return ""

    async def keep(self) -> None:
        while True:
            try:
                bus = await busmod.connect(self.url, "chaosbus-guard", connect_timeout=2.0)
            except Exception as e:  # unreachable or refused: the next attempt may do
                log.warning("SLO guard: NATS unreachable; retrying", error=str(e) or type(e).__name__)
                await asyncio.sleep(RETRY_S)
                continue
            self.bus = bus
            try:
                await service.hold(bus, interval=0.5)
            except ConnectionError as e:
                log.warning("SLO guard: NATS connection closed for good; connecting anew", error=str(e))
            finally:
                self.bus = None
                await bus.close()


async def halt_unless_halted(link: Link, reason: str, signer: signing.Signer | None, by: str) -> bool:
    """Engage the kill switch unless it already is; True if this call engaged it."""
    bus = link.bus
    if bus is None or link.unready():
        raise ConnectionError(link.unready() or "no NATS connection")
    state = await current(bus)
    if state is not None and state.halted:
        log.warning(
            "SLO guard breached while already halted", reason=reason, halted_by=state.by, halt_reason=state.reason
        )
        return False
    await set_halt(bus, halted=True, reason=reason, signer=signer, by=by)
    return True


async def serve(
    url: str,
    *,
    flags: GuardConfig | None,
    config_file: Path | None,
    key: str | None,
    metrics_port: int | None,
    metrics_addr: str = "127.0.0.1",
) -> int:
    """Serve /metrics, get the objective (flags, or the file once it exists), then guard it."""
    metrics = GuardMetrics()
    link = Link(url)
    port = None
    if metrics_port is not None:
        port = cbmetrics.serve(metrics.registry, metrics_port, metrics_addr, ready=link.unready)
    keeping = asyncio.ensure_future(link.keep())  # already while idle: ready means able to halt
    try:
        cfg = flags if config_file is None else await wait_for_config(config_file)
        assert cfg is not None
        spec = objective(cfg)
        signer = guard_signer(key)  # read now: a missing key fails at start, not at a breach
        return await run(
            link,
            spec,
            name=cfg.name,
            interval=cfg.interval,
            timeout=cfg.timeout,
            failures=cfg.failures,
            signer=signer,
            metrics=metrics,
            port=port,
        )
    finally:
        keeping.cancel()
        with contextlib.suppress(BaseException):
            await keeping


async def run(
    link: Link,
    spec: StatusCheckPrometheus,
    *,
    name: str,
    interval: float,
    timeout: float,
    failures: int,
    signer: signing.Signer | None,
    metrics: GuardMetrics,
    port: int | None,
) -> int:
    metrics.met.labels(name)
    metrics.halts.labels(name)
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
                if await halt_unless_halted(link, reason, signer, by):
                    metrics.halts.labels(name).inc()
                    log.warning("SLO guard engaged the kill switch", guard=name, reason=reason)
            except Exception as e:  # NATS unreachable: try again at the next breached evaluation
                guard.armed = True
                log.exception("SLO guard could not engage the kill switch", guard=name, error=str(e))
        await asyncio.sleep(interval)
