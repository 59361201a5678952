"""A node injector whose token takes the auth service more than 2 s to judge still gets a
connection that works, at its first connect and at a reconnect. nats-server pings a client it has
not answered within 2 s of accepting it; nats-py took that PING for the answer to its own: at a
first connect it returned from `connect` and then never sent a byte (a publish waited forever);
at a reconnect a refusal that came after it closed the connection for good. Real nats-server with
the auth callout as `chaosbus nats-secrets` configures it; the real auth service, asked through a
stand-in for the Kubernetes API whose answers are late, as a loaded control plane's are.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers.callout import callout_server
from prometheus_client import CollectorRegistry

from chaosbus.authcallout import app, core
from chaosbus.common import bus as busmod
from chaosbus.common import natsauth, natsserver, subjects

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
        assert api.reviews == 1  # the connection the late answer judged is the one in use
        ack = await asyncio.wait_for(injector.js.publish(subjects.result_subject(NODE, "exp"), b"{}"), timeout=10)
        assert ack.stream == subjects.RESULTS.name
    finally:
        await injector.close()


class LateAfterRestart(SlowApi):
    """Prompt until `late()`; then its next review comes 2.6 s late and fails (the API server out
    of reach: the auth service refuses the connection), and the one after comes 2.6 s late too."""

    def __init__(self) -> None:
        super().__init__(first_delay=0.0)
        self.late_reviews = 0

    def late(self) -> None:
        self.late_reviews = 2

    async def review(self, token: str, audience: str) -> dict[str, Any]:
        if self.late_reviews:
            self.late_reviews -= 1
            await asyncio.sleep(2.6)
            if self.late_reviews == 1:
                self.reviews += 1
                raise OSError("the API server did not answer")
        return await super().review(token, audience)


async def test_a_reconnect_judged_after_2_s_comes_back_connected_even_after_a_late_refusal(tmp_path: Path) -> None:
    nats, issuer = await callout_server(tmp_path, ("auth",))
    auth_bus = await busmod.connect(nats.url, "auth", auth=natsauth.ClientAuth(natsauth.seed_file("auth", tmp_path)))
    api = LateAfterRestart()
    service = app.AuthService(api, POLICY, issuer_seed=issuer, registry=CollectorRegistry())
    await auth_bus.nc.subscribe(subjects.AUTH_CALLOUT.pattern, queue="auth", cb=service.on_request)
    token = tmp_path / "token"
    token.write_text(bound_token())
    injector = await busmod.connect(
        nats.url, f"injector-{NODE}", auth=natsauth.ClientAuth(token_file=token, inbox=core.node_inbox(NODE))
    )
    try:
        api.late()
        os.kill(nats.process.pid, signal.SIGKILL)
        nats.process.wait()
        nats = natsserver.start(
            tmp_path / "nats", port=nats.port, config_file=tmp_path / "nats.conf", log_file=tmp_path / "nats-server.log"
        )
        restarted = time.monotonic()
        while not (injector.nc.is_connected and api.late_reviews == 0):
            assert not injector.nc.is_closed, "the late refusal closed the injector's connection for good"
            assert time.monotonic() - restarted < 25, "not reconnected within 25 s"
            await asyncio.sleep(0.05)
        ack = await asyncio.wait_for(injector.js.publish(subjects.result_subject(NODE, "exp"), b"{}"), timeout=10)
        assert ack.stream == subjects.RESULTS.name
        print(f"reconnected and acknowledged {time.monotonic() - restarted:.2f} s after the restart")
    finally:
        await injector.close()
        await auth_bus.close()
        nats.stop()
