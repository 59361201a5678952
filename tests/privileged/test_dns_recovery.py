"""DNSChaos survives a SIGKILLed injector: a real injector process applies it, is killed with
SIGKILL and restarted; the restart re-asserts it (a new responder behind a new redirect), and a
recover leaves every name resolving to its real address with no table and no responder left.
The zone server listens inside the target's own netns; queries go to 127.0.0.1:53 there, which
the redirect takes as any other resolver.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers.dnsprobe import ZONE, every_name, loopback_udp_sockets, real, resolve, zone_server
from pyroute2 import NetNS

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.injector.faults.dns import table_name

from .recovery_harness import Harness, Target, harness, publish, wait_for

pytestmark = pytest.mark.privileged


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


def dns_command(uid: str, node: str, target: Target, op: str = "apply") -> m.NodeCommand:
    action = m.TargetAction(
        target_id=f"default/{target.netns}",
        op=op,
        pod_uid=f"uid-{target.netns}",  # type: ignore[arg-type]
        namespace="default",
        pod_name=target.netns,
        container_ids=[target.container_id],
        fault=m.Dns(action="error", patterns=["a.chaos.test"]),
    )
    return m.NodeCommand(
        command_id=f"{uid}.{uuid.uuid4().hex[:8]}",
        experiment_uid=uid,
        generation=1,
        kind="DNSChaos",
        namespace="default",
        name=uid,
        node=node,
        issued_at=time.time(),
        deadline=time.time() + 300,
        actions=[action],
    )


def lo_up(path: str) -> None:
    with NetNS(path) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")


async def test_kill_9_and_restart_reasserts_dnschaos_and_recover_leaves_nothing(h: Harness, bus: busmod.Bus) -> None:
    target = h.add_target("kd")
    await asyncio.to_thread(lo_up, target.path)
    chaos = [("SERVFAIL", []), ("SERVFAIL", []), real("b.other.test")]
    clean = [real(n) for n in ZONE]

    def answers() -> object:
        return resolve(target.path, "127.0.0.1", every_name())

    with zone_server(target.path):
        assert answers() == clean
        h.start_injector("kd")
        await asyncio.to_thread(h.wait_ready, "kd")
        await publish(bus, dns_command("dnsk", "kd", target))
        await asyncio.to_thread(wait_for, lambda: answers() == chaos, 15, "DNSChaos in effect")
        h.kill_injector("kd")
        # the table outlives the process; its responder does not
        assert target.tables() == {table_name("dnsk", ".")}
        assert loopback_udp_sockets(target.path) == 0
        h.start_injector("kd")
        await asyncio.to_thread(h.wait_reconciled, "kd")
        await asyncio.to_thread(wait_for, lambda: answers() == chaos, 15, "DNSChaos re-asserted")
        await publish(bus, dns_command("dnsk", "kd", target, op="recover"))
        await asyncio.to_thread(wait_for, lambda: not target.tables(), 15, "recovered")
        assert answers() == clean
        await asyncio.to_thread(wait_for, lambda: loopback_udp_sockets(target.path) == 0, 5, "responder gone")
        assert resolve(target.path, "127.0.0.1", every_name(tcp=True)) == clean
