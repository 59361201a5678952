"""The injector's edge: a durable consumer of this node's commands; each command's actions run
concurrently in worker threads, and one result batch is published before the command is acked.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from chaosbus.common import bus as busmod
from chaosbus.common import config, service, subjects
from chaosbus.common import logging as cblog
from chaosbus.common import messages as m
from chaosbus.injector import core
from chaosbus.injector.metrics import InjectorMetrics

log = cblog.get("injector")


class Injector:
    def __init__(self, bus: busmod.Bus, node: str, metrics: InjectorMetrics, *, parallel: int = 32) -> None:
        self.bus, self.node, self.metrics = bus, node, metrics
        self._slots = asyncio.Semaphore(parallel)

    async def on_command(self, cmd: m.NodeCommand) -> None:
        with cblog.bound(experiment=f"{cmd.namespace}/{cmd.name}", experiment_uid=cmd.experiment_uid):
            results = await asyncio.gather(*(self._run(cmd, a) for a in cmd.actions))
            await self.bus.publish(subjects.result_subject(cmd.experiment_uid), core.batch(cmd, results, self.node),
                                   msg_id=cmd.command_id)
            self.metrics.commands.labels(cmd.kind).inc()

    async def _run(self, cmd: m.NodeCommand, action: m.TargetAction) -> m.TargetResult:
        tag = str(type(action.fault).__struct_config__.tag)
        async with self._slots:
            start = time.perf_counter()
            result = await asyncio.to_thread(core.run_action, cmd, action)
            self.metrics.latency.labels(tag, action.op).observe(time.perf_counter() - start)
        with cblog.bound(target=action.target_id):
            if result.ok:
                log.info(f"{action.op} ok", fault=tag, message=result.message)
            else:
                self.metrics.errors.labels(tag, action.op, "retryable" if result.retryable else "permanent").inc()
                log.warning(f"{action.op} failed", fault=tag, error=result.message)
        return result


async def main(args: argparse.Namespace) -> None:
    metrics = InjectorMetrics()
    node = config.node_name(args.node)
    async with service.connected(args, f"chaosbus-injector-{node}", metrics.registry) as (bus, port):
        inj = Injector(bus, node, metrics)
        log.info("injector ready", node=node, nats=args.nats, metrics_port=port)
        await bus.consume(subjects.COMMANDS, subjects.injector_consumer(node), subjects.command_subject(node),
                          inj.on_command, m.NodeCommand, batch=16)
