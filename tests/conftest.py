"""Shared fixtures: a real nats-server (port 0, JetStream in a temp dir) and a bus on it; and a
session guard that fails the run if chaosbus left a netns, veth, nftables table or process behind.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from chaosbus.common import bus as busmod
from chaosbus.common import natsserver


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[natsserver.EmbeddedServer]:
    server = natsserver.start(tmp_path / "nats", port=0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def bus(nats_server: natsserver.EmbeddedServer) -> AsyncIterator[busmod.Bus]:
    b = await busmod.connect(nats_server.url, "test")
    await b.ensure()
    try:
        yield b
    finally:
        await b.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # CHAOSBUS_SKIP_LEFTOVER_GUARD=1 when several test runs share a machine: each would see the
    # others' pods. CI runs alone and never sets it.
    if os.geteuid() != 0 or os.environ.get("CHAOSBUS_SKIP_LEFTOVER_GUARD") == "1":
        return
    from chaosbus.cli import leftovers

    found = leftovers.scan(netns_prefix="cb", link_prefixes=("cbv", "cbt"))
    if found:
        print("\nchaosbus left these behind after the test session:\n  " + "\n  ".join(found))
        session.exitstatus = 1
