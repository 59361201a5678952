"""Faults are always recovered, proven by breaking our own components for real: real injector
processes killed with SIGKILL, a real nats-server killed and restarted, real network namespaces
and nftables tables. Figures are printed (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers.signing import publish_lease

from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common import signing, subjects

from .recovery_harness import Harness, harness, partition_command, publish, results, table_of, wait_for

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


async def until(check: object, within: float, what: str, h: Harness | None = None) -> None:
    """Wait for `check`; on a timeout, the injectors' logs go into the failure (they die with the test)."""
    try:
        await asyncio.to_thread(wait_for, check, within, what)  # type: ignore[arg-type]
    except AssertionError as e:
        if h is None:
            raise
        logs = "\n".join(f"--- injector {n}\n{inj.log_text()[-4000:]}" for n, inj in h.injectors.items())
        raise AssertionError(f"{e}\n{logs}") from None


async def result_message(bus: busmod.Bus, uid: str, op: str, within: float = 10.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for batch in await results(bus):
            for r in batch.results:
                if batch.experiment_uid == uid and r.op == op and r.message.startswith("recovered"):
                    return r.message
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {op} result for {uid} within {within}s")


async def test_a_killed_injector_recovers_expired_faults_within_5s_of_start_and_keeps_the_rest(
    h: Harness, bus: busmod.Bus
) -> None:
    short, long = h.add_target("ka"), h.add_target("ka")
    h.start_injector("ka")
    await asyncio.to_thread(h.wait_ready, "ka")
    # The long fault first: the short one's 2.5 s must not run out while the node is still busy.
    await publish(bus, partition_command("long", "ka", [long], deadline=time.time() + 300))
    deadline = time.time() + 2.5
    await publish(bus, partition_command("short", "ka", [short], deadline=deadline))
    await until(lambda: short.tables() == {table_of("short")} and long.tables() == {table_of("long")}, 10, "applied", h)
    h.kill_injector("ka")
    await asyncio.sleep(max(0.0, deadline - time.time()) + 0.5)  # the deadline passes while it is down
    assert short.tables() == {table_of("short")}, "nobody else may have touched it"
    inj = h.start_injector("ka")
    await until(lambda: not short.tables(), 5.0, "expired fault recovered after restart")
    delay = time.monotonic() - inj.started
    print(f"\nkill -9 injector: expired fault recovered {delay:.2f}s after the restart (process start included)")
    await asyncio.to_thread(h.wait_reconciled, "ka")
    assert long.tables() == {table_of("long")}, "a fault still wanted stays in force"
    await publish(bus, partition_command("short", "ka", [short], deadline=deadline, op="recover"))
    assert await result_message(bus, "short", "recover") == "recovered: deadline passed while the injector was down"


async def test_with_nats_down_a_3s_fault_ends_at_3s_and_one_without_duration_after_the_lease(
    h: Harness, bus: busmod.Bus
) -> None:
    timed, untimed = h.add_target("nd"), h.add_target("nd")
    lease = 3.0
    h.start_injector("nd", lease_s=lease)
    await asyncio.to_thread(h.wait_ready, "nd")
    await publish(bus, partition_command("untimed", "nd", [untimed], deadline=None))
    deadline = time.time() + 3.0
    await publish(bus, partition_command("timed", "nd", [timed], deadline=deadline))
    await until(lambda: timed.tables() and untimed.tables(), 10, "applied", h)
    renewed = time.time()
    await publish_lease(
        bus, m.NodeLease(node="nd", holder="test", issued_at=renewed, ttl_s=lease, held=["timed", "untimed"])
    )
    await bus.nc.flush()
    await bus.close()
    h.kill_server()  # NATS gone entirely: no scheduler, no recorder, nothing reaches the node
    await until(lambda: not timed.tables(), 6, "timed fault recovered")
    late = time.time() - deadline
    await until(lambda: not untimed.tables(), lease + 6, "untimed fault recovered by the lease")
    after = time.time() - renewed
    print(
        f"\nNATS down: 3 s fault recovered {late:+.2f}s from its deadline; fault without duration recovered "
        f"{after:.2f}s after the last renewal (lease {lease:g}s)"
    )
    assert -0.05 < late < 0.6
    assert lease - 0.2 < after < lease + 1.5
    h.restart_server()
    again = await busmod.connect(h.server.url, "test-2")
    try:
        reason = await result_message(again, "untimed", "recover", within=15)
        assert reason == f"recovered: control-plane lease expired (NATS unreachable for {lease:g}s)"
    finally:
        await again.close()


async def test_halt_recovers_50_faults_across_5_injectors_within_1s_and_refuses_until_resume(
    h: Harness, bus: busmod.Bus
) -> None:
    nodes = [f"h{i}" for i in range(5)]
    mine = {n: [h.add_target(n), h.add_target(n)] for n in nodes}
    for n in nodes:
        h.start_injector(n, lease_s=600)
    for n in nodes:
        await asyncio.to_thread(h.wait_ready, n)
    for n in nodes:
        for k in range(5):
            await publish(bus, partition_command(f"{n}-e{k}", n, mine[n], deadline=None))
    await until(lambda: h.in_force() == 50, 20, "50 faults in force")
    cli(h, "halt", "--reason", "drill")
    state = busmod.decode(
        signing.peek((await (await bus.kv(subjects.CONTROL.name)).get(subjects.HALT_KEY)).value or b""), m.HaltState
    )
    await until(lambda: h.in_force() == 0, 5, "every fault recovered")
    seen = time.time() - state.at
    await asyncio.sleep(0.5)
    halted = [r for b in await results(bus) for r in b.results if "halted by kill switch (drill" in r.message]
    last = max(r.at for r in halted) - state.at
    print(
        f"\nhalt: 50 faults on 5 injectors recovered within {last:.3f}s of the halt (last result); "
        f"kernel polled clean {seen:.3f}s after it (incl. the CLI's exit and the polling)"
    )
    assert len(halted) == 50 and last < 1.0
    h.kill_injector("h0")  # a restarted injector stays halted
    h.start_injector("h0", lease_s=600)
    await asyncio.to_thread(h.wait_ready, "h0")
    await publish(bus, partition_command("during-halt", "h0", mine["h0"], deadline=None))
    refusal = await wait_result(bus, "during-halt")
    assert "refused: chaosbus is halted by the kill switch (drill" in refusal and "`chaosbus resume`" in refusal
    assert h.in_force() == 0
    cli(h, "resume")
    await publish(bus, partition_command("after-resume", "h1", mine["h1"][:1], deadline=None))
    await until(lambda: mine["h1"][0].tables() == {table_of("after-resume")}, 10, "applied after resume")


async def wait_result(bus: busmod.Bus, uid: str, within: float = 10.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for b in await results(bus):
            if b.experiment_uid == uid and b.results:
                return b.results[0].message
        await asyncio.sleep(0.05)
    raise AssertionError(f"no result for {uid}")


def cli(h: Harness, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "chaosbus.cli", "--nats", h.server.url, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "CHAOSBUS_KEYS_DIR": str(h.keys())},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_a_halt_set_while_the_injector_was_down_wins_at_its_start(h: Harness, bus: busmod.Bus) -> None:
    t = h.add_target("hd")
    h.start_injector("hd", lease_s=600)
    await asyncio.to_thread(h.wait_ready, "hd")
    await publish(bus, partition_command("before", "hd", [t], deadline=None))
    await until(lambda: t.tables() == {table_of("before")}, 10, "applied")
    h.kill_injector("hd")
    cli(h, "halt", "--reason", "while down")  # the broadcast finds nobody; the KV key stays
    inj = h.start_injector("hd", lease_s=600)
    await until(lambda: not t.tables(), 5, "recovered at start")
    print(
        f"\nhalt set while the injector was down: its fault recovered {time.monotonic() - inj.started:.2f}s "
        "after the restart"
    )
    await asyncio.to_thread(h.wait_reconciled, "hd")
    assert '"halted": true' in inj.log_text().split('"injector starting"')[-1]
    reason = await result_message(bus, "before", "recover")
    assert reason.startswith("recovered: halted by kill switch (while down; by ")
