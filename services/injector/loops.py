"""The node's periodic chores beside the NATS edge: the orphan sweep, housekeeping, and the health
report the dashboard shows (chaos.health.<node>).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

from chaosbus.common import bus as busmod
from chaosbus.common import logging as cblog
from chaosbus.common import subjects
from chaosbus.injector.node import Node
from chaosbus.injector.sweeper import Sweeper

log = cblog.get("injector")
HEALTH_INTERVAL_S = 2.0


async def sweep_forever(
    node: Node, sweeper: Sweeper, interval: float, *, first: Callable[[float, float], float] = random.uniform
) -> None:
    """Sweep every `interval` seconds, the first time `first(0, interval)` seconds in (a random
    offset): injectors started together (a node's restart, a bench, a rollout) would otherwise
    sweep at the same moments for as long as they run, and their sweeps would compete for the
    cores at once instead of spreading over the interval."""
    delay = first(0.0, interval)
    while True:
        await asyncio.sleep(delay)
        delay = interval
        try:
            await sweeper.sweep()
            await node.housekeeping()
        except Exception as e:
            log.exception("sweep failed", error=str(e))


async def housekeeping_forever(node: Node, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await node.housekeeping()
        except Exception as e:
            log.exception("housekeeping failed", error=str(e))


async def report_health(node: Node, name: str, bus: busmod.Bus) -> None:
    """Tell whoever watches (the dashboard) this node's lease, halt and journal, now and then."""
    since = node.clock()
    subject = subjects.health_subject(name)
    while True:
        with contextlib.suppress(Exception):
            entries = await node.run_in_thread(node.journal.open_entries)
            report = node.health(name, entries, interval_s=HEALTH_INTERVAL_S, connected_since=since)
            await bus.signal(subjects.HEALTH, subject, report)
        await asyncio.sleep(HEALTH_INTERVAL_S)
