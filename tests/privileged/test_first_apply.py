"""A node injector's first fault after a (re)start: what it would have waited for is done at start
(the nftables and tc capability probes, the netns visitor threads), the nftables probe runs through
libnftables without a process and changes nothing, and the first apply in a netns the new process
has never seen leaves exactly the intended table there.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaosbus.common import bus as busmod
from chaosbus.common import netns as nsutil
from chaosbus.injector.backends import nft
from chaosbus.injector.backends._glue import libnft

from .recovery_harness import Harness, harness, partition_command, publish, results, table_of, wait_for

pytestmark = pytest.mark.privileged
PEER = "192.0.2.1"
READY_S = 60.0  # an injector's start on a loaded 2-core machine (about 1 s when quiet)
WITHIN_S = 30.0


def listing(path: str, table: str) -> list[dict[str, Any]]:
    """The table as the kernel has it, without the handles the kernel numbers per netns."""
    out = subprocess.run(
        ["nsenter", f"--net={path}", "nft", "-j", "list", "table", "inet", table],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [_unnumbered(item) for item in json.loads(out)["nftables"] if "metainfo" not in item]


def _unnumbered(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unnumbered(v) for k, v in value.items() if k != "handle"}
    if isinstance(value, list):
        return [_unnumbered(v) for v in value]
    return value


@pytest.fixture
def netns(kernel: None) -> Iterator[str]:
    name = f"cbfirst{os.getpid()}"
    path = nsutil.create_named_netns(name)
    try:
        yield path
    finally:
        nsutil.remove_named_netns(name)


@pytest.fixture
def contexts(kernel: None) -> Iterator[libnft.NftContexts]:
    try:
        ctxs = libnft.NftContexts()
    except libnft.Unavailable as e:
        pytest.skip(f"libnftables is not usable here: {e}")
    yield ctxs
    ctxs.close()


def test_a_check_runs_through_the_kernel_and_changes_nothing(netns: str, contexts: libnft.NftContexts) -> None:
    table = "chaosbus_first_check"
    good = nft.render_partition_table(table, [nft.ResolvedRule(chain="output", peers=(PEER,))])
    assert nsutil.visit_netns(netns, contexts.check, good) is None
    assert nft.list_tables(netns) == []  # checked, not made
    error = nsutil.visit_netns(
        netns, contexts.check, f"{good}add rule inet {table} output ip daddr @no_such_set drop\n"
    )
    assert error and error.startswith("Error")  # nft's own words, for the reason a probe gives


def test_the_capability_probe_spawns_no_process_where_libnftables_is_usable(
    netns: str, contexts: libnft.NftContexts, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the probe spawned {args!r}")

    monkeypatch.setattr(nft.subprocess, "run", no_process)
    # In a netns of its own: the host's is shared with every other test's injectors and probes.
    assert nsutil.visit_netns(netns, nft.probe, contexts) is None
    assert nft.list_tables_direct(netns) == []


def test_starting_the_visitors_starts_every_visitor_thread(kernel: None) -> None:
    nsutil.start_visitors()
    visitors = [t for t in threading.enumerate() if t.name.startswith("netns-visit")]
    assert len(visitors) == nsutil._VISITORS


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


def start_log(h: Harness, node: str) -> str:
    """What the injector's latest process logged until it was ready."""
    return h.injectors[node].log_text().split('"injector ready"')[-2]


async def test_a_restarted_injectors_first_apply_in_a_netns_it_never_saw_is_exactly_the_partition(
    h: Harness, bus: busmod.Bus
) -> None:
    seen, fresh = h.add_target("fa"), h.add_target("fa")
    h.start_injector("fa")
    await asyncio.to_thread(h.wait_ready, "fa", READY_S)
    await publish(bus, partition_command("before", "fa", [seen], deadline=None, peer=PEER))
    await asyncio.to_thread(wait_for, lambda: seen.tables() == {table_of("before")}, WITHIN_S, "applied before")
    inj = h.injectors["fa"]
    assert inj.proc is not None
    inj.proc.terminate()  # as a rollout stops it
    inj.proc.wait(10)
    h.start_injector("fa")
    await asyncio.to_thread(h.wait_ready, "fa", READY_S)
    # The probes ran at start, not on the first fault's path, and found this node able.
    assert '"node prepared"' in start_log(h, "fa") and '"nftables": "usable"' in start_log(h, "fa")
    await publish(bus, partition_command("after", "fa", [fresh, seen], deadline=None, peer=PEER))
    both = {fresh.netns: {table_of("after")}, seen.netns: {table_of("before"), table_of("after")}}

    def applied() -> bool:
        return all(t.tables() == both[t.netns] for t in (fresh, seen))

    await asyncio.to_thread(wait_for, applied, WITHIN_S, "first apply after the restart")
    deadline = time.monotonic() + WITHIN_S
    while time.monotonic() < deadline:  # the results follow the effects through the journal's outbox
        done = [r for b in await results(bus) if b.experiment_uid == "after" for r in b.results]
        if len(done) == 2:
            break
        await asyncio.sleep(0.1)
    assert [r.ok for r in done] == [True, True], done
    assert listing(fresh.path, table_of("after")) == listing(seen.path, table_of("after"))
    assert _drops(listing(fresh.path, table_of("after"))) == [PEER]
    assert "chaosbus_probe" not in nft.list_tables(f"/proc/{os.getpid()}/ns/net")
    await publish(bus, partition_command("after", "fa", [fresh, seen], deadline=None, op="recover"))
    await asyncio.to_thread(
        wait_for, lambda: not fresh.tables() and seen.tables() == {table_of("before")}, WITHIN_S, "recovered"
    )


def _drops(items: list[dict[str, Any]]) -> list[str]:
    """The addresses in the table's drop sets (not its exemptions: the injector's NATS server)."""
    sets = [item["set"] for item in items if "set" in item]
    return [str(e) for s in sets if not s["name"].startswith("ex_") for e in s.get("elem", [])]
