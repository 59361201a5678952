"""Property test of admission and the scheduler's decode: generated objects (valid seeds of every
executed and orchestrated kind, mutated at random paths with adversarial values: huge and
negative integers, NaN and infinities, control characters, long strings, deep nesting, wrong
types) go through `chaosbus apply`'s admission, a direct trigger's parser and the scheduler core's
decode + reconcile. The only exception allowed is the validation error; the scheduler never raises.

Always on: CHAOSBUS_FUZZ_EXAMPLES inputs (default 1,500, derandomized so CI is stable). The full
run, 100,000 random inputs (about ten minutes on two cores): `make fuzz`.
"""

from __future__ import annotations

import copy
import os
import random
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaosbus.common import admission
from chaosbus.common import messages as m
from chaosbus.common.crd import InvalidObject
from chaosbus.common.crd.meta import RECORDS_FINALIZER
from chaosbus.scheduler import requests as rq
from chaosbus.scheduler import schedules as sch
from chaosbus.scheduler.core import SchedulerCore
from chaosbus.scheduler.orchestrator import Orchestrator

API = "chaos-mesh.org/v1alpha1"
EXAMPLES = int(os.environ.get("CHAOSBUS_FUZZ_EXAMPLES", "1500"))
FULL = EXAMPLES >= 10_000
SELECTOR = {"namespaces": ["default"], "labelSelectors": {"app": "web"}}

SEEDS: list[dict[str, Any]] = [
    {
        "kind": "NetworkChaos",
        "spec": {
            "action": "delay",
            "mode": "all",
            "selector": SELECTOR,
            "duration": "30s",
            "delay": {
                "latency": "10ms",
                "jitter": "1ms",
                "correlation": "5",
                "reorder": {"reorder": "10", "correlation": "0", "gap": 2},
            },
        },
    },
    {
        "kind": "NetworkChaos",
        "spec": {
            "action": "partition",
            "mode": "one",
            "selector": SELECTOR,
            "direction": "both",
            "target": {"mode": "fixed", "value": "2", "selector": SELECTOR},
            "externalTargets": ["10.0.0.0/8", "example.com:80"],
            "device": "eth0",
        },
    },
    {
        "kind": "NetworkChaos",
        "spec": {
            "action": "bandwidth",
            "mode": "fixed-percent",
            "value": "50",
            "selector": SELECTOR,
            "bandwidth": {"rate": "1mbps", "limit": 100, "buffer": 10000, "peakrate": 10, "minburst": 5},
        },
    },
    {
        "kind": "NetworkChaos",
        "spec": {
            "action": "netem",
            "mode": "all",
            "selector": SELECTOR,
            "loss": {"loss": "10", "correlation": "1"},
            "rate": {"rate": "10kbit"},
            "corrupt": {"corrupt": "1"},
            "duplicate": {"duplicate": "2"},
        },
    },
    {"kind": "PodChaos", "spec": {"action": "pod-kill", "mode": "one", "selector": SELECTOR, "gracePeriod": 5}},
    {
        "kind": "PodChaos",
        "spec": {"action": "container-kill", "mode": "all", "selector": SELECTOR, "containerNames": ["main"]},
    },
    {
        "kind": "PodChaos",
        "spec": {
            "action": "pod-failure",
            "mode": "random-max-percent",
            "value": "30",
            "selector": {"pods": {"default": ["web-0"]}},
            "duration": "1m",
        },
    },
    {"kind": "HelloWorldChaos", "spec": {"mode": "all", "selector": SELECTOR}},
    {
        "kind": "Schedule",
        "spec": {
            "schedule": "@every 10s",
            "type": "PodChaos",
            "historyLimit": 2,
            "podChaos": {"action": "pod-kill", "mode": "one", "selector": SELECTOR},
        },
    },
    {
        "kind": "Workflow",
        "spec": {
            "entry": "e",
            "templates": [
                {"name": "e", "templateType": "Serial", "deadline": "1m", "children": ["t", "n"]},
                {
                    "name": "t",
                    "templateType": "Task",
                    "task": {"container": {"name": "c", "image": "x", "command": ["id"]}},
                },
                {
                    "name": "n",
                    "templateType": "NetworkChaos",
                    "deadline": "10s",
                    "networkChaos": {"action": "partition", "mode": "all", "selector": SELECTOR},
                },
            ],
        },
    },
    {
        "kind": "StatusCheck",
        "spec": {
            "mode": "Synchronous",
            "type": "HTTP",
            "duration": "10s",
            "http": {"url": "http://127.0.0.1:1/", "criteria": {"statusCode": "200"}},
        },
    },
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**31, 2**32, 2**63, 2**64, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        [
            "9" * 400 + "ms",
            "5000000h",
            "@every " + "9" * 40 + "h",
            "eth0\n",
            "a" * 300,
            "1e400",
            "-1",
            "nan",
            "inf",
            "..",
            "a.b",
            "A",
            "0",
            "",
            "99999999999999999999tbps",
            "2562048h",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if len(prefix) > 12:
        return out
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


def _nest(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value} if depth % 2 else [value]
    return value


@st.composite
def objects(draw: st.DrawFn) -> Any:
    seed = draw(st.sampled_from(SEEDS))
    doc: Any = {
        "apiVersion": API,
        "kind": seed["kind"],
        "metadata": {"name": "x", "namespace": "default"},
        "spec": copy.deepcopy(seed["spec"]),
    }
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        paths = _paths(doc)
        path = paths[draw(st.integers(min_value=0, max_value=len(paths) - 1))]
        choice = draw(st.integers(min_value=0, max_value=9))
        if choice == 0:
            value: Any = _nest(draw(st.sampled_from([63, 65, 200, 3000])))
        else:
            value = draw(values)
        doc = _set(doc, path, value)
    return doc


def _scheduler_survives(core: SchedulerCore, doc: Any, uid: str) -> None:
    """The scheduler decodes the object as stored (uid, finalizer) and reconciles; never raises."""
    stored = dict(doc) if isinstance(doc, dict) else {"kind": "NetworkChaos", "spec": doc}
    meta = stored.get("metadata")
    stored["metadata"] = {
        **(meta if isinstance(meta, dict) else {}),
        "uid": uid,
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "finalizers": [RECORDS_FINALIZER],
    }
    try:
        raw = msgspec.json.encode(stored)
    except (OverflowError, TypeError, ValueError, RecursionError):
        return  # not JSON (an integer past 64 bits, NaN): nothing on NATS can carry it
    kind = stored.get("kind") if isinstance(stored.get("kind"), str) else "NetworkChaos"
    event = m.ObjectEvent(type="ADDED", kind=kind, namespace="default", name="x", uid=uid, object=msgspec.Raw(raw))
    core.on_object(event, 1_800_000_000.0)
    core.tick(1_800_000_100.0)
    SCHEDULES.on_object(event, 1_800_000_000.0)  # Schedules, Workflows, StatusChecks: the same scheduler
    SCHEDULES.tick(1_800_000_100.0)
    ORCH.on_object(event, 1_800_000_000.0)
    ORCH.tick(1_800_000_100.0, everything=True)
    ORCH.due_probes(1_800_000_100.0)


SCHEDULES = sch.ScheduleCore(started_at=1_700_000_000.0)
ORCH = Orchestrator()
ORCH.start(1_700_000_000.0)
CORE = SchedulerCore(rng=random.Random(3))
CORE.on_target(
    "pod.default.web-0",
    m.TargetPod(
        uid="u0",
        namespace="default",
        name="web-0",
        node="n1",
        labels={"app": "web"},
        pod_ip="10.0.0.1",
        phase="Running",
        containers=[m.ContainerRef(name="main", container_id="process://1")],
    ),
)


@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=not FULL, database=None, suppress_health_check=list(HealthCheck)
)
@given(doc=objects())
def test_only_the_validation_error_ever_comes_out(doc: Any) -> None:
    try:
        admission.admit(doc)  # it builds new dicts, never changes its input
    except InvalidObject:
        pass
    try:
        data = msgspec.json.encode(doc)
    except (OverflowError, TypeError, ValueError, RecursionError):
        data = None
    if data is not None:
        try:
            rq.parse_apply(data)
        except rq.BadRequest:
            pass
    _scheduler_survives(CORE, doc, f"u{random.getrandbits(32)}")
    if len(CORE.experiments) > 200:  # keep the core small: the property is per object, not cumulative
        CORE.experiments.clear()


@settings(
    max_examples=max(200, EXAMPLES // 5),
    deadline=None,
    derandomize=not FULL,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(doc=values)
def test_arbitrary_documents_too(doc: Any) -> None:
    try:
        admission.admit(doc)  # type: ignore[arg-type]
    except InvalidObject:
        pass
    _scheduler_survives(SchedulerCore(), doc, "u-any")
