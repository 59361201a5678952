"""The dashboard process against a real nats-server that goes away: while it has no live connection
its /readyz says 503 (Kubernetes takes it out of the Service: it would show stale state and a kill
switch that does nothing), and once the server is back it connects again and shows what NATS says.

The hard case is a connection nats-py closes for good: a server that comes back refusing the
dashboard's credentials (here: one restarted with a password the dashboard does not have) ends
its reconnecting. The dashboard must then make a new connection, not sit on the closed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
from helpers.readiness import stop_groups

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, subjects, webtokens
from chaosbus.dashboard.__main__ import _keep_connected
from chaosbus.dashboard.app import Dashboard
from chaosbus.dashboard.world import World

pytestmark = pytest.mark.integration
UP_WITHIN_S = 30.0  # generous: a loaded 2-core machine starts Python processes slowly


def refusing_config(path: Path) -> Path:
    path.write_text('authorization { user: "someone", password: "not-the-dashboards" }\n')
    return path


@contextlib.contextmanager
def dashboard(url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    tokens = tmp_path / "tokens"
    webtokens.ensure_tokens(tokens)
    url_file = tmp_path / "url"
    argv = [sys.executable, "-m", "chaosbus.dashboard", "--nats", url, "--port", "0", "--metrics-port", "0"]
    argv += ["--tokens-dir", str(tokens), "--url-file", str(url_file), "--mode", "local", "--read-only"]
    env = {**os.environ, "CHAOSBUS_UNSIGNED": "1"}
    with open(tmp_path / "dashboard.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        yield proc, url_file
    finally:
        stop_groups(proc)


async def readyz(s: aiohttp.ClientSession, base: str) -> int:
    try:
        async with s.get(base + "readyz", timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def ready_is(s: aiohttp.ClientSession, base: str, wanted: int) -> bool:
    return await readyz(s, base) == wanted


async def until(check: Callable[[], Awaitable[bool]], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {within_s:.0f} s: {what}")


def event(name: str) -> m.ObjectEvent:
    obj = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "PodChaos",
        "metadata": {"name": name, "namespace": "default", "uid": f"u-{name}"},
        "spec": {"action": "pod-kill"},
    }
    return m.ObjectEvent(
        type="ADDED",
        kind="PodChaos",
        namespace="default",
        name=name,
        uid=f"u-{name}",
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )


async def publish(url: str, name: str) -> None:
    bus = await busmod.connect(url, "test", give_up_after=10)
    try:
        await bus.ensure()
        subject = subjects.object_subject("PodChaos", "default", name)
        await bus.publish(subjects.OBJECTS, subject, event(name), msg_id=name)
    finally:
        await bus.close()


async def test_dashboard_is_unready_without_nats_and_reconnects_after_a_closed_connection(tmp_path: Path) -> None:
    store = tmp_path / "nats"
    server = natsserver.start(store)
    port = server.port
    try:
        await publish(server.url, "before")
        with dashboard(server.url, tmp_path) as (proc, url_file):
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:  # an IP host

                async def served() -> bool:
                    return url_file.exists() and url_file.read_text().endswith("\n")

                await until(served, UP_WITHIN_S, "the dashboard serves")
                base = url_file.read_text().strip()
                await until(lambda: ready_is(s, base, 200), UP_WITHIN_S, "ready with NATS up")

                # Back, but refusing the dashboard: nats-py closes the connection for good.
                server.stop()
                server = natsserver.start(store, port=port, config_file=refusing_config(tmp_path / "refuse.conf"))
                await until(lambda: ready_is(s, base, 503), UP_WITHIN_S, "unready once NATS is lost")
                away_until = time.monotonic() + 4.0  # several of nats-py's reconnect attempts and ours
                while time.monotonic() < away_until:
                    assert await readyz(s, base) == 503, "ready without a usable NATS connection"
                    assert proc.poll() in (None, 1), "the dashboard ended, but not as a failure"
                    await asyncio.sleep(0.3)

                # Back as it was: the dashboard (or, had it exited, its restart) connects again.
                server.stop()
                server = natsserver.start(store, port=port)
                await until(lambda: ready_is(s, base, 200), UP_WITHIN_S, "ready again with NATS back")
                assert proc.poll() is None
                await publish(server.url, "after")
                token = webtokens.read_tokens(tmp_path / "tokens")["viewer"]
                async with s.post(base + "login", data={"token": token}, allow_redirects=False) as r:
                    assert r.status == 303

                async def shows_after() -> bool:
                    async with s.get(base) as r:
                        return "after" in await r.text()

                await until(shows_after, UP_WITHIN_S, "an object published after the reconnect shown")
    finally:
        server.stop()


async def test_a_connection_closed_for_good_is_replaced_not_sat_on(
    nats_server: natsserver.EmbeddedServer, bus: busmod.Bus
) -> None:
    """nats-py closes a connection for good when the server refuses it after the CONNECT (the auth
    callout answering late does that): here closed as nats-py would close it, in the dashboard's
    own process, with nats-server up all along.
    """
    world = World()
    d = Dashboard(world=world, tokens={"viewer": "v" * 40}, writer=None)
    edge = asyncio.ensure_future(_keep_connected(nats_server.url, d, world, local=True))
    try:

        async def ready() -> bool:
            return d.unready() == ""

        await until(ready, UP_WITHIN_S, "ready")
        closed = d.bus
        assert closed is not None
        await closed.nc.close()
        assert d.unready() != ""  # at once: no traffic for a dashboard on a dead connection

        async def replaced() -> bool:
            return d.bus is not None and d.bus is not closed and d.unready() == ""

        await until(replaced, UP_WITHIN_S, "a new connection, ready")
        subject = subjects.object_subject("PodChaos", "default", "later")
        await bus.publish(subjects.OBJECTS, subject, event("later"), msg_id="later")

        async def shown() -> bool:
            return world.find("PodChaos", "default", "later") is not None

        await until(shown, UP_WITHIN_S, "an object published on the new connection")
    finally:
        edge.cancel()
        with contextlib.suppress(BaseException):
            await edge
