"""The scheduler's edge for Workflows and StatusChecks: object events into the orchestrator, its
writes out as ObjectWrite messages (the recorder carries them out), HTTP probes run concurrently
when due, and a timer loop that wakes at the orchestrator's next deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import msgspec

from chaosbus.common import logging as cblog
from chaosbus.common import messages as m
from chaosbus.scheduler import probe as probemod
from chaosbus.scheduler.metrics import SchedulerMetrics, by_namespace
from chaosbus.scheduler.orchestrator import Orchestrator, Outputs, ProbeRequest
from chaosbus.scheduler.workflow import TaskRun, Write

log = cblog.get("scheduler")
Publish = Callable[[list[m.ObjectWrite]], Awaitable[None]]
SendCommand = Callable[[m.NodeCommand], Awaitable[None]]


def to_message(w: Write, now: float) -> m.ObjectWrite:
    body = msgspec.Raw(msgspec.json.encode(w.body)) if w.body is not None else msgspec.Raw(b"null")
    return m.ObjectWrite(
        write_id=f"wf.{uuid.uuid4().hex}",
        op=w.op,  # type: ignore[arg-type]
        kind=w.kind,
        namespace=w.namespace,
        name=w.name,
        uid=w.uid,
        object=body,
        annotations=w.annotations,
        reason=w.reason,
        at=now,
    )


def task_command(run: TaskRun, node: str, now: float) -> m.NodeCommand:
    """A Task's command for one node's injector; the node's uid stands for the experiment."""
    task = m.Task(
        argv=list(run.argv),
        timeout_s=run.timeout_s,
        container=dict(run.container),
        volumes=list(run.volumes),
        workflow=run.workflow,
        workflow_node_uid=run.uid,
    )
    action = m.TargetAction(target_id=f"{run.namespace}/{run.node}", op="apply", fault=task)
    return m.NodeCommand(
        command_id=f"{run.uid}.task.{uuid.uuid4().hex[:12]}",
        experiment_uid=run.uid,
        generation=1,
        kind="WorkflowNode",
        namespace=run.namespace,
        name=run.node,
        node=node,
        issued_at=now,
        actions=[action],
    )


class Flows:
    def __init__(
        self,
        publish: Publish,
        send: SendCommand | None = None,
        task_node: Callable[[], str | None] | None = None,
        orch: Orchestrator | None = None,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        self.publish, self.orch = publish, orch or Orchestrator()
        self.send, self.task_node, self.metrics = send, task_node, metrics
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # writes leave in the order the orchestrator decided them
        self._probes: set[asyncio.Task[None]] = set()

    async def emit(self, out: Outputs) -> None:
        for err in out.errors:
            log.error("orchestration object rejected", error=err)
        if out.writes:
            now = time.time()
            await self.publish([to_message(w, now) for w in out.writes])
        for run in out.tasks:
            await self._send_task(run)
        self._wake.set()

    async def _send_task(self, run: TaskRun) -> None:
        node = self.task_node() if self.task_node else None
        if node is None or self.send is None:
            # No injector known yet: forget the send so the next tick asks again.
            self.orch.tasks_sent.discard(("WorkflowNode", run.namespace, run.node))
            log.warning("task waits for a node to run on", node=run.node, namespace=run.namespace)
            return
        await self.send(task_command(run, node, time.time()))
        log.info("task sent", workflow_node=run.node, namespace=run.namespace, node=node, argv=list(run.argv))

    async def on_results(self, batch: m.ResultBatch) -> None:
        if batch.kind != "WorkflowNode":
            return
        async with self._lock:
            for r in batch.results:
                await self.emit(self.orch.on_task_result(batch.namespace, batch.name, r, time.time()))

    async def on_object(self, event: m.ObjectEvent) -> None:
        async with self._lock:
            await self.emit(self.orch.on_object(event, time.time()))

    async def start(self) -> None:
        """Every object has been replayed: act."""
        async with self._lock:
            await self.emit(self.orch.start(time.time()))

    async def run(self, replayed: asyncio.Event) -> None:
        await replayed.wait()
        await self.start()
        while True:
            async with self._lock:
                await self.emit(self.orch.tick(time.time()))
                self._wake.clear()
                for req in self.orch.due_probes(time.time()):
                    task = asyncio.ensure_future(self._probe(req))
                    self._probes.add(task)
                    task.add_done_callback(self._probes.discard)
            if self.metrics is not None:
                for phase, n in self.orch.workflow_phases().items():
                    self.metrics.workflows.labels(phase).set(n)
                self.metrics.cm_workflows.set_all(by_namespace(ns for _kind, ns, _name in self.orch.workflows))
            nxt = self.orch.next_wakeup()
            delay = 1.0 if nxt is None else max(0.01, min(1.0, nxt - time.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _probe(self, req: ProbeRequest) -> None:
        if req.prometheus is not None:
            result = await probemod.query(req.prometheus, req.timeout_s)
        elif req.http is not None:
            result = await probemod.probe(req.http, req.timeout_s)
        else:
            result = probemod.ProbeResult(ok=False, detail="nothing to probe")
        log.info("status check probed", check=req.key[2], namespace=req.key[1], ok=result.ok, detail=result.detail)
        if self.metrics is not None:
            self.metrics.probes.labels("success" if result.ok else "failure").inc()
        async with self._lock:
            await self.emit(self.orch.on_probe(req, result.ok, time.time()))
