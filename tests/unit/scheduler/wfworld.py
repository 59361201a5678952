"""A small in-memory world for driving the Orchestrator without NATS: it carries out object writes
as the recorder would (uids, creationTimestamp, status merge patches, annotations, deletes), turns
every change into the ObjectEvent the watcher would publish, and plays the chaos kinds' part by
marking a chaos child's records Injected when the test says so.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

import msgspec

from chaosbus.common import messages as m
from chaosbus.common.objects import rfc3339
from chaosbus.scheduler import workflow as wf
from chaosbus.scheduler.orchestrator import Key, Orchestrator, Outputs, merge_patch

Obj = dict[str, Any]
T0 = 1767323045.0


def workflow(templates: list[Obj], entry: str = "entry", name: str = "wf", annotations: Obj | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": "default"}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "Workflow",
        "metadata": meta,
        "spec": {"entry": entry, "templates": templates},
    }


def pod_kill(name: str, deadline: str | None = None) -> Obj:
    t: Obj = {
        "name": name,
        "templateType": "PodChaos",
        "podChaos": {"action": "pod-kill", "mode": "one", "selector": {"labelSelectors": {"app": "w"}}},
    }
    if deadline:
        t["deadline"] = deadline
    return t


def partition(name: str, deadline: str) -> Obj:
    return {
        "name": name,
        "templateType": "NetworkChaos",
        "deadline": deadline,
        "networkChaos": {
            "action": "partition",
            "mode": "all",
            "direction": "to",
            "selector": {"labelSelectors": {"app": "w"}},
        },
    }


class World:
    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.objects: dict[Key, Obj] = {}
        self.uids = itertools.count(1)
        self.log: list[tuple[float, wf.Write]] = []
        self.orch = Orchestrator()
        self.orch.ready = True
        self.on_create: Callable[[Obj], None] | None = None
        self.queue: list[wf.Write] = []
        self.probe_ok: Callable[[], bool] | None = None
        self.tasks: list[wf.TaskRun] = []
        self.draining = False

    def add(self, obj: Obj) -> None:
        self._store(copy.deepcopy(obj), "ADDED")

    def _store(self, obj: Obj, type_: str) -> None:
        meta = obj["metadata"]
        meta.setdefault("namespace", "default")
        if type_ == "ADDED":
            meta["uid"] = f"uid-{next(self.uids)}"
            meta["creationTimestamp"] = rfc3339(self.now)
        key = (obj["kind"], meta["namespace"], meta["name"])
        self.objects[key] = obj
        self.deliver(self.event(obj, type_))

    @staticmethod
    def event(obj: Obj, type_: str) -> m.ObjectEvent:
        md = obj["metadata"]
        return m.ObjectEvent(
            type=type_,
            kind=obj["kind"],
            namespace=md["namespace"],
            name=md["name"],  # type: ignore[arg-type]
            uid=md.get("uid", ""),
            object=msgspec.Raw(msgspec.json.encode(obj)),
        )

    def deliver(self, event: m.ObjectEvent) -> None:
        self.take(self.orch.on_object(event, self.now))

    def take(self, out: Outputs) -> None:
        """Carry out an orchestrator's outputs: its writes, and note the tasks it asks to run."""
        self.tasks += out.tasks
        self.apply(out.writes)

    def apply(self, writes: list[wf.Write]) -> None:
        """Carry out writes in the order they were asked for, as the recorder's queue does; writes
        caused by the events of earlier ones queue up behind.
        """
        self.queue += writes
        if self.draining:
            return
        self.draining = True
        try:
            while self.queue:
                self._carry_out(self.queue.pop(0))
        finally:
            self.draining = False

    def _carry_out(self, w: wf.Write) -> None:
        if True:
            self.log.append((self.now, w))
            key = (w.kind, w.namespace, w.name)
            current = self.objects.get(key)
            if w.op == "create":
                if current is None:
                    self._store(copy.deepcopy(w.body), "ADDED")
                    if self.on_create is not None:
                        self.on_create(self.objects[key])
            elif current is None or (w.uid and current["metadata"]["uid"] != w.uid):
                return
            elif w.op == "status":
                current = copy.deepcopy(current)
                current["status"] = merge_patch(current.get("status") or {}, w.body)
                self._store(current, "MODIFIED")
            elif w.op == "annotate":
                current = copy.deepcopy(current)
                ann = {**current["metadata"].get("annotations", {}), **w.annotations}
                current["metadata"]["annotations"] = {k: v for k, v in ann.items() if v is not None}
                self._store(current, "MODIFIED")
            elif w.op == "delete":
                del self.objects[key]
                self.deliver(self.event(current, "DELETED"))

    def set_status(self, kind: str, name: str, status: Obj) -> None:
        obj = copy.deepcopy(self.objects[(kind, "default", name)])
        obj["status"] = status
        self._store(obj, "MODIFIED")

    def advance(self, until: float) -> None:
        """Move the clock to each wake-up the orchestrator asks for, up to `until`; due probes are
        answered with `probe_ok()` when it is set.
        """
        while True:
            self.take(self.orch.tick(self.now))
            for req in self.orch.due_probes(self.now) if self.probe_ok else []:
                self.take(self.orch.on_probe(req, ok=self.probe_ok(), now=self.now))
            nxt = self.orch.next_wakeup()
            if nxt is None or nxt > until or (nxt <= self.now and not self.probe_ok):
                break
            self.now = max(self.now, nxt)
        self.now = max(self.now, until)
        self.take(self.orch.tick(self.now))

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for k, o in sorted(self.objects.items()) if k[0] == kind]

    def node(self, template: str) -> Obj:
        found = [n for n in self.of_kind("WorkflowNode") if n["spec"]["templateName"] == template]
        assert len(found) == 1, (template, [n["metadata"]["name"] for n in found])
        return found[0]

    def wf_status(self, name: str = "wf") -> Obj:
        status: Obj = self.objects[("Workflow", "default", name)].get("status") or {}
        return status

    def creates(self) -> list[str]:
        return [w.name for _, w in self.log if w.op == "create"]

    def events(self) -> list[tuple[str, str, str, str]]:
        """(kind, template or workflow name, reason, message) of every event write, in order."""
        templates = {n["metadata"]["name"]: n["spec"]["templateName"] for n in self.of_kind("WorkflowNode")}
        return [
            (w.kind, templates.get(w.name, w.name), w.reason, w.body["message"]) for _, w in self.log if w.op == "event"
        ]


def injected(records: int = 1) -> Obj:
    return {
        "experiment": {
            "desiredPhase": "Run",
            "containerRecords": [
                {"id": f"default/p{i}", "selectorKey": ".", "phase": "Injected"} for i in range(records)
            ],
        }
    }


def conds(obj: Obj) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}
