"""The shared edge of every service process: common flags, logging, metrics endpoint, signals."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from prometheus_client import CollectorRegistry

from chaosbus.common import bus as busmod
from chaosbus.common import config, natsauth, subjects
from chaosbus.common import logging as cblog
from chaosbus.common import metrics as cbmetrics

# The services decode large JSON documents (a 1,000-target experiment is 250 KB of status, read
# on every write) into short-lived objects: at CPython's default gen-0 threshold of 700 that is a
# collection every few hundred allocations, and a full collection every few dozen, each scanning
# every long-lived object (measured in the scheduler at 1,000 targets: 30-220 ms pauses, several
# a second). Fewer, larger young collections cost the same per object and far fewer full scans.
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    gc.freeze()  # what start-up built (modules, config) lives as long as the process: never scanned
    gc.set_threshold(*GC_THRESHOLDS)


def parser(service: str, description: str, *, metrics_port: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"chaosbus-{service}", description=description)
    p.add_argument("--nats", default=None, help="NATS URL (default: CHAOSBUS_NATS_URL or the embedded server)")
    natsauth.add_auth_arguments(p)
    p.add_argument("--metrics-port", type=int, default=metrics_port, help="port of /metrics (0: any free port)")
    p.add_argument("--metrics-addr", default="127.0.0.1", help="address of /metrics")
    p.add_argument("--log-level", default="info")
    return p


def identity_of(service: str, args: argparse.Namespace) -> str:
    """The NATS user a service connects as: a node injector's name carries its node."""
    if service != "injector":
        return service
    node = subjects.CLUSTER_NODE if getattr(args, "cluster", False) else config.node_name(getattr(args, "node", None))
    return natsauth.user_name(service, node)


def add_scope_arguments(p: argparse.ArgumentParser) -> None:
    """Flags for Chaos Mesh's controller scope; its environment variables work too (see `scope`)."""
    p.add_argument(
        "--target-namespace",
        default="",
        help="namespace-scoped mode: only this namespace (Chaos Mesh's CLUSTER_SCOPED=false + TARGET_NAMESPACE)",
    )
    p.add_argument(
        "--enable-filter-namespace",
        action="store_true",
        help="only pods of namespaces annotated chaos-mesh.org/inject=enabled "
        "(Chaos Mesh's ENABLE_FILTER_NAMESPACE=true)",
    )


def scope(args: argparse.Namespace) -> config.ControllerScope:
    """The controller scope from `add_scope_arguments`' flags and the environment; a bad setting
    stops the service at start with a message naming it, as Chaos Mesh's controller does.
    """
    try:
        return config.controller_scope(
            target_namespace=args.target_namespace, enable_filter_namespace=args.enable_filter_namespace
        )
    except ValueError as e:
        raise SystemExit(f"chaosbus: {e}") from None


def add_guard_arguments(p: argparse.ArgumentParser) -> None:
    """Flags for what is never targeted; their environment variables work too (see `guard`)."""
    p.add_argument(
        "--protected-namespaces",
        default=None,
        help="comma-separated namespaces never targeted (env PROTECTED_NAMESPACES; default "
        "kube-system); chaosbus's own namespace (CHAOSBUS_NAMESPACE, POD_NAMESPACE, else "
        "chaosbus) is always protected",
    )
    p.add_argument(
        "--allow-host-network-testing",
        action="store_true",
        help="let network faults target hostNetwork pods (Chaos Mesh's ALLOW_HOST_NETWORK_TESTING)",
    )


def guard(args: argparse.Namespace) -> config.TargetGuard:
    """The target guard from `add_guard_arguments`' flags and the environment; a bad setting stops
    the service at start with a message naming it.
    """
    try:
        return config.target_guard(
            protected_namespaces=getattr(args, "protected_namespaces", None),
            allow_host_network_testing=getattr(args, "allow_host_network_testing", False),
        )
    except ValueError as e:
        raise SystemExit(f"chaosbus: {e}") from None


def run(
    service: str, args: argparse.Namespace, main: Callable[[argparse.Namespace], Coroutine[Any, Any, None]]
) -> None:
    """Run `main(args)` until it returns or SIGTERM/SIGINT arrives; exit cleanly either way."""
    cblog.configure(service, level=args.log_level)
    args.nats = config.nats_url(args.nats)
    natsauth.use_arguments(identity_of(service, args), args, args.nats)
    tune_gc()
    asyncio.run(_supervise(service, args, main))


async def _supervise(
    service: str, args: argparse.Namespace, main: Callable[[argparse.Namespace], Coroutine[Any, Any, None]]
) -> None:
    log = cblog.get(service)
    task = asyncio.create_task(main(args))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        log.info("stopped by signal")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def run_forever(*coros: Awaitable[None]) -> None:
    """Run loops together; the first to fail takes the others down (and its error surfaces)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            t.result()
    finally:
        for t in tasks:
            t.cancel()
        # Bounded: a nats-py call may swallow a cancel, and shutdown must not hang on it.
        await asyncio.wait(tasks, timeout=5.0)


async def hold(bus: busmod.Bus, interval: float = 1.0) -> None:
    """Return never while the NATS connection lives; raise once nats-py has closed it for good (it
    stops reconnecting after some refusals), so that a service whose work is all in subscription
    callbacks ends and is restarted instead of staying up, and Ready, with no connection."""
    while True:
        if bus.nc.is_closed:
            raise ConnectionError("the NATS connection was closed for good")
        await asyncio.sleep(interval)


class Readiness:
    """What a service's /readyz answers: "" (200) only while its NATS connection is live and none
    of its main loop's parts is pending, else one line saying why not (503). The parts are named
    by the service ("snapshot", "commands", ...): `pending` before one works, `done` once it does.

    Read by the metrics server's thread while the event loop writes: every change replaces the
    dict (one reference swap), so a probe reads either the old parts or the new ones.
    """

    def __init__(self) -> None:
        self.bus: busmod.Bus | None = None
        self._pending: dict[str, str] = {}

    def pending(self, part: str, why: str) -> None:
        self._pending = {**self._pending, part: why}

    def done(self, part: str) -> None:
        if part in self._pending:
            self._pending = {k: v for k, v in self._pending.items() if k != part}

    async def once(self, event: asyncio.Event, part: str) -> None:
        """Mark `part` done when `event` is set (a loop to run beside the service's others)."""
        await event.wait()
        self.done(part)

    def unready(self) -> str:
        bus, pending = self.bus, self._pending
        if bus is None or bus.nc.is_closed:
            return "no NATS connection"
        if not bus.nc.is_connected:
            return "NATS connection lost (reconnecting)"
        return next(iter(pending.values()), "")


@contextlib.asynccontextmanager
async def connected(
    args: argparse.Namespace, name: str, registry: CollectorRegistry, ready: Readiness | None = None
) -> AsyncIterator[tuple[busmod.Bus, int]]:
    """A service's common start: /metrics (and /readyz, answered by `ready`) served, NATS connected,
    streams and buckets declared.
    """
    ready = ready or Readiness()
    port = cbmetrics.serve(registry, args.metrics_port, args.metrics_addr, ready=ready.unready)
    bus = await busmod.connect(args.nats, name)
    try:
        await bus.ensure()
        ready.bus = bus
        yield bus, port
    finally:
        ready.bus = None
        await bus.close()
