"""HTTPChaos survives a SIGKILLed injector: a real injector process applies it, is killed with
SIGKILL and restarted; the restart re-asserts it (a new proxy behind a new redirect), and a
recover leaves every request going straight to the server with no table and no proxy left. The
echo server listens inside the target's own netns; requests go to 127.0.0.1 there, which the
redirect takes as any other destination (the target is the client side).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers.httpprobe import echo_server, listening_ports, request
from pyroute2 import NetNS

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.injector.faults.http import table_name

from .recovery_harness import Harness, Target, harness, publish, wait_for

pytestmark = pytest.mark.privileged
PORT = 9080


@pytest.fixture
def h(kernel: None, tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as hs:
        yield hs


@pytest.fixture
async def bus(h: Harness) -> AsyncIterator[busmod.Bus]:
    b = await busmod.connect(h.server.url, "test")
    await b.ensure()
    yield b
    await b.close()


def http_command(
    uid: str, node: str, target: Target, op: str = "apply", deadline: float | None = None
) -> m.NodeCommand:
    action = m.TargetAction(
        target_id=f"default/{target.netns}",
        op=op,
        pod_uid=f"uid-{target.netns}",  # type: ignore[arg-type]
        namespace="default",
        pod_name=target.netns,
        container_ids=[target.container_id],
        fault=m.Http(target="Response", port=PORT, path="/api/*", replace=m.HttpReplace(code=503)),
    )
    return m.NodeCommand(
        command_id=f"{uid}.{uuid.uuid4().hex[:8]}",
        experiment_uid=uid,
        generation=1,
        kind="HTTPChaos",
        namespace="default",
        name=uid,
        node=node,
        issued_at=time.time(),
        deadline=deadline or time.time() + 300,
        actions=[action],
    )


def lo_up(path: str) -> None:
    with NetNS(path) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")


async def test_kill_9_and_restart_reasserts_httpchaos_and_recover_leaves_nothing(h: Harness, bus: busmod.Bus) -> None:
    target = h.add_target("kh")
    await asyncio.to_thread(lo_up, target.path)

    def status(path: str = "/api/x") -> object:
        return request(target.path, "127.0.0.1", PORT, path, timeout=3.0).status

    with echo_server(target.path, (PORT,)):
        assert status() == 200 and listening_ports(target.path) == {PORT}
        h.start_injector("kh")
        await asyncio.to_thread(h.wait_ready, "kh")
        await publish(bus, http_command("httpk", "kh", target))
        await asyncio.to_thread(wait_for, lambda: status() == 503, 15, "HTTPChaos in effect")
        assert status("/other") == 200 and len(listening_ports(target.path)) == 2  # the server and the proxy
        h.kill_injector("kh")
        # the table outlives the process; its proxy does not: redirected connections are refused
        assert target.tables() == {table_name("httpk", ".")}
        assert str(status()).startswith(("error", "reset"))
        h.start_injector("kh")
        await asyncio.to_thread(h.wait_reconciled, "kh")
        await asyncio.to_thread(wait_for, lambda: status() == 503, 15, "HTTPChaos re-asserted")
        await publish(bus, http_command("httpk", "kh", target, op="recover"))
        await asyncio.to_thread(wait_for, lambda: not target.tables(), 15, "recovered")
        assert status() == 200 and status("/other") == 200
        await asyncio.to_thread(wait_for, lambda: listening_ports(target.path) == {PORT}, 5, "proxy gone")


async def test_deadline_passing_while_the_injector_is_dead_goes_direct_and_the_restart_cleans_up(
    h: Harness, bus: busmod.Bus
) -> None:
    target = h.add_target("kd")
    await asyncio.to_thread(lo_up, target.path)

    def status() -> object:
        return request(target.path, "127.0.0.1", PORT, "/api/x", timeout=3.0).status

    with echo_server(target.path, (PORT,)):
        h.start_injector("kd")
        await asyncio.to_thread(h.wait_ready, "kd")
        deadline = float(int(time.time()) + 6)
        await publish(bus, http_command("httpd", "kd", target, deadline=deadline))
        await asyncio.to_thread(wait_for, lambda: status() == 503, 15, "HTTPChaos in effect")
        h.kill_injector("kd")
        # nothing of chaosbus runs: at the deadline the kernel stops redirecting by itself
        await asyncio.to_thread(wait_for, lambda: status() == 200, deadline - time.time() + 10, "direct again")
        assert target.tables() == {table_name("httpd", ".")}
        h.start_injector("kd")
        await asyncio.to_thread(h.wait_reconciled, "kd")
        await asyncio.to_thread(wait_for, lambda: not target.tables(), 15, "expired fault recovered")
        assert status() == 200 and listening_ports(target.path) == {PORT}
