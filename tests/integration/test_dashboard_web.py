"""The dashboard's web edge over a real nats-server, without a browser: what it shows arrives through
`chaos.obj.>`, every page needs a session, writes need the admin role, the session's CSRF token and
this server's Origin, the kill switch also the operator key, and a change is pushed on /live. Its
/metrics count requests by route pattern, live connections, logins and writes by action. A session
opened on one replica works on another with the same secret, and after a restart, but not where
the secret differs (rotation); its CSRF token and the Origin check hold everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import metrics as cbmetrics
from chaosbus.common import subjects
from chaosbus.dashboard import auth, writes
from chaosbus.dashboard.app import LIVE_KEEPALIVE_S, Dashboard, make_app
from chaosbus.dashboard.world import World, follow

pytestmark = pytest.mark.integration
TOKENS = {"viewer": "viewer-token-" + "v" * 30, "admin": "admin-token-" + "a" * 30}


def experiment(phase: str, injected: int) -> dict[str, Any]:
    recs = [
        {
            "id": f"default/web-{i}",
            "selectorKey": ".",
            "phase": "Injected" if i < injected else "Not Injected",
            "injectedCount": 1,
            "recoveredCount": 0,
            "events": [],
        }
        for i in range(2)
    ]
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "NetworkChaos",
        "metadata": {"name": "cut<1>", "namespace": "default", "uid": "u1"},
        "spec": {"action": "partition"},
        "status": {"phase": phase, "experiment": {"containerRecords": recs}},
    }


async def publish(bus: busmod.Bus, obj: dict[str, Any], kind: str = "ADDED") -> None:
    event = m.ObjectEvent(
        type=kind,
        kind="NetworkChaos",
        namespace="default",
        name="cut<1>",
        uid="u1",  # type: ignore[arg-type]
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )
    await bus.js.publish(subjects.object_subject("NetworkChaos", "default", "cut<1>"), busmod.encode(event))


@dataclass
class Site:
    url: str
    world: World
    dashboard: Dashboard


@contextlib.asynccontextmanager
async def serving(bus: busmod.Bus, sessions: auth.Sessions | None = None) -> AsyncIterator[Site]:
    world = World()
    d = Dashboard(world=world, tokens=TOKENS, writer=None, bus=bus)
    if sessions is not None:
        d.sessions = sessions
    d.writer = writes.TriggerWriter(lambda: d.bus)
    feeding = asyncio.ensure_future(follow(bus, world, local=True))
    runner = web.AppRunner(make_app(d), access_log=None)
    await runner.setup()
    server = web.TCPSite(runner, "127.0.0.1", 0)
    await server.start()
    port = int(runner.addresses[0][1])
    try:
        yield Site(f"http://127.0.0.1:{port}", world, d)
    finally:
        feeding.cancel()
        with contextlib.suppress(BaseException):
            await feeding
        await runner.cleanup()


@pytest.fixture
async def site(bus: busmod.Bus) -> AsyncIterator[Site]:
    async with serving(bus) as s:
        yield s


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # unsafe: cookies for an IP host


async def login(s: aiohttp.ClientSession, url: str, role: str) -> str:
    async with s.post(url + "/login", data={"token": TOKENS[role]}, allow_redirects=False) as r:
        assert r.status == 303
    async with s.get(url + "/") as r:
        found = re.search(r'data-csrf="([^"]+)"', await r.text())
    assert found
    return found.group(1)


async def until(check: Any, within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        for _ in itertools.count():  # polled: the dashboard's state has no event to wait on from here
            if await check():
                return
            await asyncio.sleep(0.05)


async def test_pages_need_a_session_and_show_what_nats_says(site: Site, bus: busmod.Bus) -> None:
    await publish(bus, experiment("Running", 2))
    async with session() as s:
        async with s.get(site.url + "/", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login"
        async with s.post(site.url + "/login", data={"token": "guess"}, allow_redirects=False) as r:
            assert r.status == 401
        await login(s, site.url, "viewer")

        async def listed() -> bool:
            async with s.get(site.url + "/") as r:
                text = await r.text()
                assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            return 'data-key="NetworkChaos/default/cut&lt;1&gt;"' in text and ">2</span>/<span" in text

        await until(listed)
        async with s.get(site.url + "/experiments/NetworkChaos/default/cut%3C1%3E") as r:
            page = await r.text()
        assert r.status == 200 and "default/web-0" in page and "cut&lt;1&gt;" in page and "cut<1>" not in page


async def test_writes_need_the_admin_role_the_csrf_token_and_this_origin(site: Site, bus: busmod.Bus) -> None:
    await publish(bus, experiment("Running", 2))
    pause = site.url + "/experiments/NetworkChaos/default/cut%3C1%3E/pause"
    await until(lambda: asyncio.sleep(0, site.world.find("NetworkChaos", "default", "cut<1>") is not None))
    async with session() as viewer:
        csrf = await login(viewer, site.url, "viewer")
        async with viewer.post(pause, data={"csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 403
    async with session() as admin:
        csrf = await login(admin, site.url, "admin")
        async with admin.post(pause, data={}, allow_redirects=False) as r:
            assert r.status == 403
        async with admin.post(
            pause, data={"csrf": csrf}, headers={"Origin": "http://evil.example"}, allow_redirects=False
        ) as r:
            assert r.status == 403
        async with admin.post(site.url + "/control/halt", data={"csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 403  # no operator key on this dashboard
        # Allowed: it reaches the trigger (no scheduler here, so it says nobody answered).
        async with admin.post(pause, data={"csrf": csrf}, headers={"Origin": site.url}, allow_redirects=False) as r:
            assert r.status == 303 and "did%20not%20answer" in r.headers["Location"]


async def test_a_change_is_pushed_on_the_live_stream(site: Site, bus: busmod.Bus) -> None:
    await publish(bus, experiment("Injecting", 0))
    async with session() as s:
        await login(s, site.url, "viewer")
        async with s.get(site.url + "/live", timeout=aiohttp.ClientTimeout(total=20)) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            seen: list[dict[str, Any]] = []

            async def running() -> bool:
                line = (await r.content.readline()).decode()
                if line.startswith("data: "):
                    seen.extend(json.loads(line[6:])["rows"])
                    if seen and seen[-1]["phase"] == "Injecting":
                        await publish(bus, experiment("Running", 2), "MODIFIED")
                return any(row["phase"] == "Running" and row["injected"] == 2 for row in seen)

            await until(running, within_s=15)


async def test_metrics_count_requests_by_route_live_connections_logins_and_writes(site: Site, bus: busmod.Bus) -> None:
    port = cbmetrics.serve(site.dashboard.metrics.registry, 0)

    async def scrape(name: str, **labels: str) -> float | None:
        async with aiohttp.ClientSession() as c, c.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
        values = [
            x.value
            for f in text_string_to_metric_families(text)
            for x in f.samples
            if x.name == name and labels.items() <= x.labels.items()
        ]
        return values[0] if values else None

    await publish(bus, experiment("Running", 2))
    await until(lambda: asyncio.sleep(0, site.world.find("NetworkChaos", "default", "cut<1>") is not None))
    async with session() as viewer:
        async with viewer.post(site.url + "/login", data={"token": "guess"}, allow_redirects=False) as r:
            assert r.status == 401
        csrf = await login(viewer, site.url, "viewer")
        async with viewer.get(site.url + "/experiments/NetworkChaos/default/cut%3C1%3E") as r:
            assert r.status == 200
        async with viewer.post(
            site.url + "/experiments/NetworkChaos/default/cut%3C1%3E/delete", data={"csrf": csrf}
        ) as r:
            assert r.status == 403
        async with viewer.get(site.url + "/no-such-page") as r:
            assert r.status == 404
        async with viewer.get(site.url + "/live", timeout=aiohttp.ClientTimeout(total=20)) as r:
            await r.content.readline()
            assert await scrape("chaosbus_dashboard_live_connections") == 1.0
    # A closed stream is noticed at its next write: the keep-alive, at most LIVE_KEEPALIVE_S later.
    await until(lambda: _is(scrape("chaosbus_dashboard_live_connections"), 0.0), within_s=LIVE_KEEPALIVE_S + 15)
    assert await scrape("chaosbus_dashboard_logins_total", outcome="refused") == 1.0
    assert await scrape("chaosbus_dashboard_logins_total", outcome="viewer") == 1.0
    assert await scrape("chaosbus_dashboard_logins_total", outcome="admin") == 0.0
    route = "/experiments/{kind}/{ns}/{name}"
    assert await scrape("chaosbus_dashboard_requests_total", route=route, method="GET", status="200") == 1.0
    assert await scrape("chaosbus_dashboard_requests_total", route="/login", method="POST", status="401") == 1.0
    assert await scrape("chaosbus_dashboard_requests_total", route="unmatched", status="404") == 1.0
    assert await scrape("chaosbus_dashboard_requests_total", route=route + "/delete", status="403") == 1.0
    assert await scrape("chaosbus_dashboard_writes_total", action="delete", outcome="refused") == 1.0
    assert await scrape("chaosbus_dashboard_writes_total", action="delete", outcome="done") == 0.0


async def _is(value: Any, expected: float) -> bool:
    return bool(await value == expected)


async def test_a_session_works_on_every_replica_sharing_the_secret_and_survives_a_restart(bus: busmod.Bus) -> None:
    await publish(bus, experiment("Running", 2))
    secret = b"replicas share this secret......"
    async with session() as browser:
        async with serving(bus, auth.Sessions(secret)) as one:
            csrf = await login(browser, one.url, "admin")
            cookie = next(c.value for c in browser.cookie_jar if c.key == auth.SESSION_COOKIE)
        # The first replica is gone (a restart, or the load balancer moved us): the cookie still works.
        async with serving(bus, auth.Sessions(secret)) as other:
            await until(lambda: asyncio.sleep(0, other.world.find("NetworkChaos", "default", "cut<1>") is not None))
            async with browser.get(other.url + "/", allow_redirects=False) as r:
                assert r.status == 200 and "admin" in await r.text()
            pause = other.url + "/experiments/NetworkChaos/default/cut%3C1%3E/pause"
            # The CSRF token from the first replica's page is the one this replica expects.
            async with browser.post(
                pause, data={"csrf": csrf}, headers={"Origin": other.url}, allow_redirects=False
            ) as r:
                assert r.status == 303 and "did%20not%20answer" in r.headers["Location"]
            async with browser.post(pause, data={"csrf": "forged"}, allow_redirects=False) as r:
                assert r.status == 403
            async with browser.post(
                pause, data={"csrf": csrf}, headers={"Origin": "http://evil.example"}, allow_redirects=False
            ) as r:
                assert r.status == 403
        async with serving(bus, auth.Sessions(b"a rotated secret................")) as rotated:
            assert any(c.key == auth.SESSION_COOKIE and c.value == cookie for c in browser.cookie_jar)
            async with browser.get(rotated.url + "/", allow_redirects=False) as r:  # the same cookie sent
                assert r.status == 303 and r.headers["Location"] == "/login"
