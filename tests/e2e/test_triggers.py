"""Direct triggers over NATS, end to end on `chaosbus up` with process pods: apply a partition with a
request (the same JSON as the custom resource), see the connectivity matrix change, read its status
and the list, recover it with a request and see the fault gone; malformed requests get an
ErrorReply naming the field, and the system keeps serving afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats
import pytest
from helpers.live import System, eventually, wait_blocked

pytestmark = pytest.mark.privileged

PARTITION = {
    "apiVersion": "chaos-mesh.org/v1alpha1",
    "kind": "NetworkChaos",
    "metadata": {"name": "trig-p"},
    "spec": {
        "action": "partition",
        "mode": "all",
        "direction": "both",
        "selector": {"fieldSelectors": {"metadata.name": "peer-0"}},
        "target": {"mode": "all", "selector": {"fieldSelectors": {"metadata.name": "peer-1"}}},
    },
}
REF = {"kind": "NetworkChaos", "name": "trig-p"}


def request(system: System, subject: str, payload: bytes | dict[str, Any]) -> dict[str, Any]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()

    async def ask() -> dict[str, Any]:
        nc = await nats.connect(system.url, **system.auth("client").connect_options())
        try:
            msg = await nc.request(subject, data, timeout=10)
            reply: dict[str, Any] = json.loads(msg.data)
            return reply
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_apply_see_the_fault_recover_see_it_gone(system: System) -> None:
    t0 = time.monotonic()
    applied = request(system, "chaos.trigger.apply", PARTITION)
    assert (applied["kind"], applied["namespace"], applied["name"], applied["action"]) == (
        "NetworkChaos",
        "default",
        "trig-p",
        "created",
    ) and applied["uid"]
    wait_blocked(system, {(0, 1), (1, 0)})
    print(f"\npartition in effect {time.monotonic() - t0:.2f}s after the apply request")

    def running() -> dict[str, Any] | None:
        got = request(system, "chaos.trigger.get", REF)
        return got if got.get("phase") == "Running" else None

    got = eventually(running, timeout=10)
    records = got["status"]["experiment"]["containerRecords"]
    assert {(r["id"], r["phase"]) for r in records} == {("default/peer-0", "Injected"), ("default/peer-1", "Injected")}
    assert got["status"]["experiment"]["desiredPhase"] == "Run"
    listed = request(system, "chaos.trigger.list", {})
    assert ("trig-p", "Running") in {(e["name"], e["phase"]) for e in listed["experiments"]}

    t1 = time.monotonic()
    recovered = request(system, "chaos.trigger.recover", REF)
    assert recovered["outcome"] in ("deleting", "deleted")
    wait_blocked(system, set())
    print(f"partition gone {time.monotonic() - t1:.2f}s after the recover request")
    eventually(lambda: "error" in request(system, "chaos.trigger.get", REF), timeout=10)  # the object is gone
    assert "trig-p" not in {e["name"] for e in request(system, "chaos.trigger.list", {"all": True})["experiments"]}


@pytest.mark.parametrize(
    ("subject", "payload", "field"),
    [
        ("chaos.trigger.apply", b"{this is not json", ""),
        ("chaos.trigger.apply", {**PARTITION, "kind": "Pod"}, "kind"),
        (
            "chaos.trigger.apply",
            {**PARTITION, "spec": {**PARTITION["spec"], "direction": "sideways"}},  # type: ignore[dict-item]
            "spec.direction",
        ),
        ("chaos.trigger.get", {"kind": "NetworkChaos", "name": "no-such-experiment"}, "name"),
        ("chaos.trigger.recover", {"kind": "NetworkChaos"}, "name"),
        ("chaos.trigger.list", b'["not", "an", "object"]', ""),
    ],
)
def test_malformed_requests_get_an_error_reply(
    system: System, subject: str, payload: bytes | dict[str, Any], field: str
) -> None:
    reply = request(system, subject, payload)
    assert reply.get("error") and reply.get("field", "") == field, reply
    # The scheduler is still there and serving.
    assert "experiments" in request(system, "chaos.trigger.list", {})
