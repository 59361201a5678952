"""The bus across a lost connection to a real nats-server (killed with SIGKILL, restarted on its
port): closing finishes and keeps the caller's own error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import natsserver, subjects

pytestmark = pytest.mark.integration


@dataclass
class Live:
    server: natsserver.EmbeddedServer
    bus: busmod.Bus
    folder: Path

    def kill(self) -> None:
        os.kill(self.server.process.pid, signal.SIGKILL)
        self.server.process.wait()

    def restart(self) -> None:
        self.server = natsserver.start(self.folder, port=self.server.port)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    server = natsserver.start(tmp_path / "nats")
    b = await busmod.connect(server.url, "test")
    live = Live(server, b, tmp_path / "nats")
    try:
        await b.ensure()
        yield live
    finally:
        with contextlib.suppress(Exception):
            await b.close()
        live.server.stop()


async def eventually(cond: Callable[[], bool], within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        assert time.monotonic() < deadline, f"not within {within_s} s"
        await asyncio.sleep(0.02)


def health(node: str) -> m.NodeHealth:
    return m.NodeHealth(node=node, at=time.time())


async def test_closing_a_dropped_connection_with_unsent_data_finishes_and_keeps_the_callers_error(live: Live) -> None:
    """nats-py flushed what was buffered during the outage into the dead socket when closing,
    raised ConnectionResetError and left its subscription tasks running; the service's own error
    was replaced by it."""
    outside = set(asyncio.all_tasks())
    heard: list[bytes] = []

    async def on_health(msg: object) -> None:
        heard.append(b"")

    await live.bus.listen(subjects.HEALTH, on_health)
    client_tasks = set(asyncio.all_tasks()) - outside - {asyncio.current_task()}
    live.kill()
    await eventually(lambda: not live.bus.nc.is_connected)
    await live.bus.signal(subjects.HEALTH, "chaos.health.n1", health("n1"))  # buffered until a reconnect

    with pytest.raises(RuntimeError, match="the service's own error"):
        try:
            raise RuntimeError("the service's own error")
        finally:
            await live.bus.close()

    assert live.bus.nc.is_closed
    assert client_tasks, "the client runs tasks (reader, flusher, the subscription's)"
    await eventually(lambda: all(t.done() for t in client_tasks), 5)
