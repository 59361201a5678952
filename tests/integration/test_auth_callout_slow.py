"""A node injector whose token takes the auth service more than 2 s to judge still gets a
connection that works. nats-server pings a client it has not answered within 2 s of accepting it;
nats-py took that PING for the answer to its own, returned from `connect`, and then never sent
a byte (a publish waited forever). Real nats-server with the auth callout as `chaosbus
nats-secrets` configures it; the real auth service, asked through a stand-in for the Kubernetes
API whose first answer is late, as a loaded control plane's is.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers.callout import callout_server
from prometheus_client import CollectorRegistry

from chaosbus.authcallout import app, core
from chaosbus.common import bus as busmod
from chaosbus.common import natsauth, subjects

pytestmark = pytest.mark.integration
NODE, POD, UID = "node-a", "inj-a", "uid-a"
POLICY = core.Policy(namespace="chaosbus", service_account="chaosbus-injector")


class SlowApi:
    """What the API server says of a bound token of POD on NODE; its first review comes late."""

    def __init__(self, first_delay: float) -> None:
        self.first_delay = first_delay
        self.reviews = 0

    async def review(self, token: str, audience: str) -> dict[str, Any]:
        self.reviews += 1
        if self.reviews == 1:
            await asyncio.sleep(self.first_delay)
        extra = {core.POD_NAME: [POD], core.POD_UID: [UID], core.NODE_NAME: [NODE]}
        return {"authenticated": True, "audiences": [audience], "user": {"username": POLICY.username, "extra": extra}}

    async def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": name, "uid": UID}, "spec": {"nodeName": NODE}} if name == POD else None


def bound_token() -> str:
    claims = {"exp": 4102444800, "kubernetes.io": {"pod": {"name": POD, "uid": UID}}}
    return "h." + base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=") + ".s"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, SlowApi]]:
    nats, issuer = await callout_server(tmp_path, ("auth",))
    auth_bus = await busmod.connect(nats.url, "auth", auth=natsauth.ClientAuth(natsauth.seed_file("auth", tmp_path)))
    api = SlowApi(first_delay=2.6)
    service = app.AuthService(api, POLICY, issuer_seed=issuer, registry=CollectorRegistry())
    await auth_bus.nc.subscribe(subjects.AUTH_CALLOUT.pattern, queue="auth", cb=service.on_request)
    try:
        yield nats.url, api
    finally:
        await auth_bus.close()
        nats.stop()


async def test_a_token_judged_after_2_s_gets_a_connection_that_publishes(
    server: tuple[str, SlowApi], tmp_path: Path
) -> None:
    url, api = server
    token = tmp_path / "token"
    token.write_text(bound_token())
    injector = await asyncio.wait_for(
        busmod.connect(
            url, f"injector-{NODE}", auth=natsauth.ClientAuth(token_file=token, inbox=core.node_inbox(NODE))
        ),
        timeout=30,
    )
    try:
        assert api.reviews >= 2  # the late answer's connection was dropped, the next one judged at once
        ack = await asyncio.wait_for(injector.js.publish(subjects.result_subject(NODE, "exp"), b"{}"), timeout=10)
        assert ack.stream == subjects.RESULTS.name
    finally:
        await injector.close()
