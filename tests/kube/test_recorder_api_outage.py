"""The recorder in cluster mode (a real process, real HTTP) across an API server outage: what it
must write while the API is away (a decision's status, an unexecuted kind's NotSupported mark, and
their Events) is kept and written once the API answers again, not given up after a few quick tries.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers.prom import free_port
from helpers.readiness import readyz_until, stop_groups
from kube.conftest import KubeEnv

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, subjects

pytestmark = pytest.mark.integration
OUTAGE_S = 4.0  # longer than the few quick tries a failing handler used to get (about 1.5 s)
GROUP = "/apis/chaos-mesh.org/v1alpha1/namespaces"


@pytest.fixture
def recorder(kube: KubeEnv, nats_server: natsserver.EmbeddedServer, tmp_path: Path) -> Iterator[int]:
    kube.need_fake("an API server stopped and started again under a running recorder")
    port = free_port()
    argv = [sys.executable, "-m", "chaosbus.recorder", "--kubeconfig", str(kube.kubeconfig)]
    argv += ["--nats", nats_server.url, "--metrics-port", str(port)]
    env = {**os.environ, "CHAOSBUS_STATE_DIR": str(tmp_path / "state")}
    with open(tmp_path / "recorder.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        got = readyz_until(port, 200, 60)
        assert got == (200, "ready"), (got, (tmp_path / "recorder.log").read_text()[-3000:])
        yield port
    finally:
        stop_groups(proc)


def jvm_chaos(name: str) -> dict[str, Any]:
    """A kind chaosbus accepts and does not run: the recorder marks it NotSupported."""
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "JVMChaos",
        "metadata": {"name": name},
        "spec": {
            "action": "return",
            "class": "Main",
            "method": "getnum",
            "value": "9999",
            "mode": "all",
            "selector": {},
        },
    }


def added(obj: dict[str, Any]) -> m.ObjectEvent:
    """The event the watcher publishes for a new object."""
    meta = obj["metadata"]
    return m.ObjectEvent(
        type="ADDED",
        kind=obj["kind"],
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )


def until(check: Any, within_s: float) -> Any:
    deadline = time.monotonic() + within_s
    while not (got := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


async def test_what_the_recorder_writes_while_the_api_is_away_arrives_after_it(
    recorder: int, kube: KubeEnv, bus: busmod.Bus, tmp_path: Path
) -> None:
    ns, fake = kube.namespace, kube.need_fake("stopped and started")
    jvm = kube.client.create(
        f"{GROUP}/{ns}/jvmchaos",
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "JVMChaos",
            "metadata": {"name": "jvm"},
            "spec": {
                "action": "return",
                "class": "Main",
                "method": "getnum",
                "value": "9999",
                "mode": "all",
                "selector": {},
            },
        },
    )
    part = kube.client.create(
        f"{GROUP}/{ns}/networkchaos",
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "NetworkChaos",
            "metadata": {"name": "part"},
            "spec": {"action": "partition", "mode": "all", "selector": {"labelSelectors": {"app": "web"}}},
        },
    )
    fake.stop()
    try:
        # What the watcher saw just before the outage, and what the scheduler decided during it.
        seen = m.ObjectEvent(
            type="ADDED",
            kind="JVMChaos",
            namespace=ns,
            name="jvm",
            uid=jvm["metadata"]["uid"],
            object=msgspec.Raw(msgspec.json.encode(jvm)),
        )
        await bus.publish(subjects.OBJECTS, subjects.object_subject("JVMChaos", ns, "jvm"), seen, msg_id="jvm-added")
        decision = m.ExperimentDecision(
            experiment_uid=part["metadata"]["uid"],
            generation=1,
            kind="NetworkChaos",
            namespace=ns,
            name="part",
            desired_phase="Run",
            records=[m.RecordRef(id=f"{ns}/web-0")],
        )
        await bus.publish(
            subjects.DECISIONS, subjects.decision_subject(decision.experiment_uid), decision, msg_id="part-run"
        )
        await asyncio.sleep(OUTAGE_S)  # the outage itself: the recorder tries its writes meanwhile
    finally:
        fake.start()

    def marked() -> bool:
        obj = kube.client.get(f"{GROUP}/{ns}/jvmchaos/jvm") or {}
        return any(c.get("reason") == "NotSupported" for c in (obj.get("status") or {}).get("conditions") or [])

    def decided() -> bool:
        obj = kube.client.get(f"{GROUP}/{ns}/networkchaos/part") or {}
        return ((obj.get("status") or {}).get("experiment") or {}).get("desiredPhase") == "Run"

    log = tmp_path / "recorder.log"
    assert until(marked, 20), log.read_text()[-3000:]
    assert until(decided, 20), log.read_text()[-3000:]

    def told() -> set[str]:
        items = kube.client.request("GET", f"/api/v1/namespaces/{ns}/events")["items"]
        return {f"{e['involvedObject']['name']}/{e['reason']}" for e in items}

    assert until(lambda: {"jvm/NotSupported", "part/Started"} <= told(), 20), told()


def decision_for(obj: dict[str, Any], phase: str) -> m.ExperimentDecision:
    meta = obj["metadata"]
    return m.ExperimentDecision(
        experiment_uid=meta["uid"],
        generation=1,
        kind="NetworkChaos",
        namespace=meta["namespace"],
        name=meta["name"],
        desired_phase=phase,  # type: ignore[arg-type]
        records=[m.RecordRef(id=f"{meta['namespace']}/web-0")],
    )


async def test_an_object_whose_writes_fail_holds_up_no_other_object(
    recorder: int, kube: KubeEnv, bus: busmod.Bus, tmp_path: Path
) -> None:
    """The API answers one object's writes 500 (an admission webhook failing for it): its status
    waits, in the order it was decided, while another object's is written at once."""
    ns, fake = kube.namespace, kube.need_fake("writes of one object failing")
    spec = {"action": "partition", "mode": "all", "selector": {"labelSelectors": {"app": "web"}}}
    made = {
        name: kube.client.create(
            f"{GROUP}/{ns}/networkchaos",
            {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos", "metadata": {"name": name}, "spec": spec},
        )
        for name in ("stuck", "fine")
    }
    jvms = {name: kube.client.create(f"{GROUP}/{ns}/jvmchaos", jvm_chaos(name)) for name in ("stuck", "fine")}
    fake.fail_writes(f"{GROUP}/{ns}/networkchaos/stuck", 500)
    fake.fail_writes(f"{GROUP}/{ns}/jvmchaos/stuck", 500)
    try:
        for name, phase in (("stuck", "Run"), ("stuck", "Stop"), ("fine", "Run")):
            d = decision_for(made[name], phase)
            await bus.publish(subjects.DECISIONS, subjects.decision_subject(d.experiment_uid), d, msg_id=name + phase)
        for name in ("stuck", "fine"):  # the follower: the stuck one's mark waits, the fine one's does not
            event = added(jvms[name])
            await bus.publish(subjects.OBJECTS, subjects.object_subject("JVMChaos", ns, name), event, msg_id=name)

        def phase(name: str) -> str | None:
            obj = kube.client.get(f"{GROUP}/{ns}/networkchaos/{name}") or {}
            return ((obj.get("status") or {}).get("experiment") or {}).get("desiredPhase")

        log = tmp_path / "recorder.log"

        def marked(name: str) -> bool:
            obj = kube.client.get(f"{GROUP}/{ns}/jvmchaos/{name}") or {}
            return any(c.get("reason") == "NotSupported" for c in (obj.get("status") or {}).get("conditions") or [])

        assert until(lambda: phase("fine") == "Run", 20), log.read_text()[-3000:]
        assert until(lambda: marked("fine"), 20), log.read_text()[-3000:]
        assert phase("stuck") is None and not marked("stuck")
    finally:
        fake.fail_writes(f"{GROUP}/{ns}/networkchaos/stuck", None)
        fake.fail_writes(f"{GROUP}/{ns}/jvmchaos/stuck", None)
    assert until(lambda: phase("stuck") == "Stop", 20), log.read_text()[-3000:]
    assert until(lambda: marked("stuck"), 20), log.read_text()[-3000:]
