"""The SLO guard process against a real nats-server that goes away: its /readyz (on the metrics
port) says 503 while it has no connection to halt over, a breach meanwhile is not lost (the guard
re-arms and halts once NATS is back), and a server that comes back refusing it, which makes nats-py
give the connection up, does not leave it on a dead connection. The objective comes from a stub
Prometheus whose answer the test sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers.prom import free_port
from helpers.readiness import readyz, stop_groups

from chaosbus.cli.guard import Link
from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, subjects

pytestmark = pytest.mark.integration
UP_WITHIN_S = 30.0  # generous: a loaded 2-core machine starts Python processes slowly


class StubPrometheus:
    """Answers every instant query with one scalar, `value`."""

    def __init__(self) -> None:
        self.value = 1.0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = json.dumps(
                    {"status": "success", "data": {"resultType": "scalar", "result": [time.time(), str(stub.value)]}}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def guard(nats_url: str, prom_url: str, metrics_port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "chaosbus.cli", "--nats", nats_url, "guard", "--name", "g"]
    argv += ["--prometheus", prom_url, "--query", "up", "--criteria", ">", "--value", "0.5"]
    argv += ["--interval", "0.3", "--failures", "2", "--metrics-port", str(metrics_port)]
    env = {**os.environ, "CHAOSBUS_UNSIGNED": "1"}  # no keys: this is about the connection
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        stop_groups(proc)


async def until(check: Callable[[], Awaitable[bool]], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {within_s:.0f} s: {what}")


async def ready_is(port: int, wanted: int) -> bool:
    return (await asyncio.to_thread(readyz, port))[0] == wanted


async def kill_switch(url: str) -> m.HaltState | None:
    bus = await busmod.connect(url, "test", give_up_after=10)
    try:
        return await (await bus.bucket(subjects.CONTROL)).get(subjects.HALT_KEY)
    finally:
        await bus.close()


async def test_guard_is_unready_without_nats_and_halts_once_it_is_back(tmp_path: Path) -> None:
    store = tmp_path / "nats"
    server = natsserver.start(store)
    port, metrics_port, prom = server.port, free_port(), StubPrometheus()
    try:
        bus = await busmod.connect(server.url, "test")
        await bus.ensure()  # the admin's step: the guard finds the bucket made
        await bus.close()
        with guard(server.url, prom.url, metrics_port, tmp_path / "guard.log") as proc:
            await until(lambda: ready_is(metrics_port, 200), UP_WITHIN_S, "ready with NATS up")

            server.stop()
            conf = tmp_path / "refuse.conf"
            conf.write_text('authorization { user: "someone", password: "not-the-guards" }\n')
            server = natsserver.start(store, port=port, config_file=conf)
            await until(lambda: ready_is(metrics_port, 503), UP_WITHIN_S, "unready once NATS is lost")
            prom.value = 0.0  # breached while the guard cannot halt
            away_until = time.monotonic() + 4.0  # several breached evaluations and reconnect attempts
            while time.monotonic() < away_until:
                assert (await asyncio.to_thread(readyz, metrics_port))[0] == 503, "ready without a usable connection"
                assert proc.poll() is None, "the guard ended"
                await asyncio.sleep(0.3)

            server.stop()
            server = natsserver.start(store, port=port)
            await until(lambda: ready_is(metrics_port, 200), UP_WITHIN_S, "ready again with NATS back")

            async def halted() -> bool:
                state = await kill_switch(server.url)
                return state is not None and state.halted and "SLO guard g" in state.reason

            await until(halted, UP_WITHIN_S, "the breach halts once NATS is back")
            assert proc.poll() is None
    finally:
        prom.close()
        server.stop()


async def test_a_connection_closed_for_good_is_replaced_not_sat_on(nats_server: natsserver.EmbeddedServer) -> None:
    """Closed as nats-py closes a connection it gives up on, with nats-server up all along."""
    link = Link(nats_server.url)
    keeping = asyncio.ensure_future(link.keep())
    try:

        async def ready() -> bool:
            return link.unready() == ""

        await until(ready, UP_WITHIN_S, "connected")
        closed = link.bus
        assert closed is not None
        await closed.nc.close()
        assert link.unready() != ""

        async def replaced() -> bool:
            return link.bus is not None and link.bus is not closed and link.unready() == ""

        await until(replaced, UP_WITHIN_S, "a new connection")
    finally:
        keeping.cancel()
        with contextlib.suppress(BaseException):
            await keeping
