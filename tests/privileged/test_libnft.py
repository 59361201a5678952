"""nft transactions through libnftables in real network namespaces: the table lands in the target
netns (not ours), the context outlives our last table there by its idle keep and no longer than
its netns, a refused script changes nothing and says why, and the spawn path takes over when
libnftables cannot be used.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from chaosbus.common import messages as m
from chaosbus.common import netns as nsutil
from chaosbus.injector import faults, runtime
from chaosbus.injector.backends import nft
from chaosbus.injector.backends._glue import libnft, nfnl
from chaosbus.injector.backends.kit import Backends, process_backends
from chaosbus.injector.faults import partition

pytestmark = pytest.mark.usefixtures("kernel")
TABLE = "chaosbus_libnft_test"


def tables_in(path: str) -> list[str]:
    out = subprocess.run(
        ["nsenter", f"--net={path}", "nft", "-j", "list", "tables"], capture_output=True, text=True, check=True
    ).stdout
    return [t["table"]["name"] for t in json.loads(out)["nftables"] if "table" in t]


def script(table: str = TABLE, peer: str = "192.0.2.7") -> str:
    return nft.render_partition_table(table, [nft.ResolvedRule(chain="output", peers=(peer,))])


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"cblibnft{os.getpid()}"
    path = nsutil.create_named_netns(name)
    try:
        yield path
    finally:
        nsutil.remove_named_netns(name)


@pytest.fixture
def contexts() -> Iterator[libnft.NftContexts]:
    try:
        ctxs = libnft.NftContexts()
    except libnft.Unavailable as e:
        pytest.skip(f"libnftables is not usable here: {e}")
    yield ctxs
    ctxs.close()


def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def quick_idle() -> Iterator[libnft.NftContexts]:
    """Contexts that let an unused one go after 0.3 s instead of IDLE_KEEP_S."""
    try:
        ctxs = libnft.NftContexts(idle_keep_s=0.3)
    except libnft.Unavailable as e:
        pytest.skip(f"libnftables is not usable here: {e}")
    yield ctxs
    ctxs.close()


def test_a_table_lands_in_the_target_netns_and_the_context_stays_ready_after_it(
    netns: str, contexts: libnft.NftContexts, monkeypatch: pytest.MonkeyPatch
) -> None:
    contexts.apply(netns, TABLE, f"add table inet {TABLE}\ndelete table inet {TABLE}\n{script()}")
    assert tables_in(netns) == [TABLE]
    assert TABLE not in tables_in(f"/proc/{os.getpid()}/ns/net")  # not in the injector's own netns
    assert len(contexts) == 1
    contexts.apply(netns, "chaosbus_second", script("chaosbus_second"))
    contexts.delete(netns, TABLE)
    contexts.delete(netns, "chaosbus_second")
    assert tables_in(netns) == [] and len(contexts) == 1  # kept for the next fault here

    def no_new_context(lib: object) -> int:
        raise AssertionError("a context was made although one was kept for this netns")

    monkeypatch.setattr(libnft, "new_context", no_new_context)
    contexts.apply(netns, TABLE, script())  # a new experiment on the same pod: no context made
    assert tables_in(netns) == [TABLE] and len(contexts) == 1


def test_an_idle_context_is_let_go_with_its_socket(netns: str, quick_idle: libnft.NftContexts) -> None:
    # Closing waits in the kernel, so it happens in the background; settle() is when the socket is gone.
    # The sockets the context opened are followed by identity, not counted: other parts of this
    # process (another test's contexts reaped meanwhile) open and close descriptors of their own.
    before = open_sockets()
    quick_idle.apply(netns, TABLE, script())
    mine = open_sockets() - before
    assert mine  # the context's netlink sockets, inside the netns
    time.sleep(0.6)
    assert len(quick_idle) == 1  # never let go while one of our tables is there
    quick_idle.delete(netns, TABLE)
    assert tables_in(netns) == [] and len(quick_idle) == 1
    eventually(lambda: len(quick_idle) == 0)  # by the reaper, with nobody calling
    quick_idle.settle()
    assert mine & open_sockets() == set()


def open_sockets() -> set[str]:
    """The process's open sockets, each as `socket:[inode]`: an identity a reused number does not take."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:"):
                out.add(target)
    return out


def test_a_refused_script_changes_nothing_and_says_why(netns: str, contexts: libnft.NftContexts) -> None:
    contexts.apply(netns, TABLE, script())
    with pytest.raises(libnft.TransactionFailed, match="no_such_set|Error"):
        contexts.apply(
            netns,
            TABLE,
            f"delete table inet {TABLE}\n{script()}add rule inet {TABLE} output ip daddr @no_such_set drop\n",
        )
    assert tables_in(netns) == [TABLE]  # the delete in the same transaction did not happen either


def test_a_context_whose_netns_is_gone_lets_it_go_soon_unasked(contexts: libnft.NftContexts) -> None:
    # A deleted pod's netns is held alive by the context's socket until the reaper sees its path gone.
    name = f"cblibnftgone{os.getpid()}"
    path = nsutil.create_named_netns(name)
    try:
        contexts.apply(path, TABLE, script())
        assert len(contexts) == 1
    finally:
        nsutil.remove_named_netns(name)
    eventually(lambda: len(contexts) == 0, within=15.0)  # every REAP_EVERY_S; generous under load
    with pytest.raises(libnft.NetnsGone):
        contexts.apply(path, TABLE, script())


def test_no_context_past_the_descriptor_headroom(
    netns: str, contexts: libnft.NftContexts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(libnft, "FD_HEADROOM", 0)
    with pytest.raises(libnft.Unavailable):
        contexts.apply(netns, TABLE, script())
    assert tables_in(netns) == [] and len(contexts) == 0


def test_nft_backend_spawns_when_libnftables_cannot_be_used(
    netns: str, contexts: libnft.NftContexts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(libnft, "FD_HEADROOM", 0)  # every context refused: the spawn path must do it
    tables = nft.Tables(contexts)
    tables.apply(netns, TABLE, script())
    assert tables_in(netns) == [TABLE] and len(contexts) == 0
    tables.delete(netns, TABLE)
    assert tables_in(netns) == []


def test_nft_backend_uses_libnftables_and_maps_errors(netns: str) -> None:
    tables = nft.Tables(nft.open_contexts())
    ctxs = tables.contexts
    if ctxs is None:
        pytest.skip("libnftables is not usable here (or CHAOSBUS_NFT=spawn)")
    try:
        tables.apply(netns, TABLE, script())
        assert tables_in(netns) == [TABLE] and len(ctxs) == 1
        tables.delete(netns, TABLE)
        assert tables_in(netns) == []
        with pytest.raises(nft.NetnsGone):
            tables.apply(netns + "-missing", TABLE, script())
    finally:
        tables.close()


def test_a_raw_nfnetlink_delete_removes_exactly_the_table_and_absent_is_not_an_error(netns: str) -> None:
    nft.apply_table(netns, TABLE, script())
    nft.apply_table(netns, "chaosbus_other", script("chaosbus_other"))
    sock = nsutil.run_in_netns(netns, nfnl.open_socket)
    try:
        assert nfnl.delete_table(sock, TABLE) is True
        assert tables_in(netns) == ["chaosbus_other"]
        assert nfnl.delete_table(sock, TABLE) is False  # already gone: the fault is gone
        with pytest.raises(OSError, match="chaosbus_other"):
            nfnl.delete_table(sock, "chaosbus_other" + "x" * 300)  # a name the kernel refuses
    finally:
        sock.close()
        nft.delete_table(netns, "chaosbus_other")


def test_a_delete_without_a_context_uses_a_bare_socket_and_keeps_none(netns: str, contexts: libnft.NftContexts) -> None:
    nft.apply_table(netns, TABLE, script())  # by an nft process, not through this fixture's contexts
    contexts.delete(netns, TABLE)
    assert tables_in(netns) == [] and len(contexts) == 0


def rules_of(path: str) -> str:
    return subprocess.run(
        ["nsenter", f"--net={path}", "nft", "list", "table", "inet", TABLE], capture_output=True, text=True, check=True
    ).stdout


def test_a_table_made_by_someone_else_is_replaced_not_merged(netns: str, contexts: libnft.NftContexts) -> None:
    # A first apply defines the table outright; one that finds the table already there (an earlier
    # injector's, say) must replace it in one transaction, or the old rules would stay beside the new.
    subprocess.run(
        ["nsenter", f"--net={netns}", "nft", "-f", "-"], input=script(peer="192.0.2.7"), text=True, check=True
    )
    contexts.apply(netns, TABLE, script(peer="192.0.2.8"))
    listed = rules_of(netns)
    assert "192.0.2.8" in listed and "192.0.2.7" not in listed
    contexts.apply(netns, TABLE, script(peer="192.0.2.9"))  # ours now: replaced again
    listed = rules_of(netns)
    assert "192.0.2.9" in listed and "192.0.2.8" not in listed and listed.count("chain output") == 1


def test_the_raw_existence_check_sees_exactly_the_named_table(netns: str) -> None:
    nft.apply_table(netns, TABLE, script())
    sock = nsutil.run_in_netns(netns, nfnl.open_socket)
    try:
        assert nfnl.table_exists(sock, TABLE) is True
        assert nfnl.table_exists(sock, "chaosbus_absent") is False
    finally:
        sock.close()
        nft.delete_table(netns, TABLE)


def test_drop_counters_read_through_the_context_match_what_nft_prints(netns: str, contexts: libnft.NftContexts) -> None:
    peer = "192.0.2.9"
    contexts.apply(netns, TABLE, script(peer=peer))
    subprocess.run(["ip", "-n", os.path.basename(netns), "link", "set", "lo", "up"], check=True)
    subprocess.run(["nsenter", f"--net={netns}", "ip", "route", "add", "default", "dev", "lo"], check=True)
    # Each send is dropped by the partition's output rule (EPERM) and counted by the kernel.
    probe = (
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(5):\n    try:\n"
        f"        s.sendto(b'x' * 20, ('{peer}', 9))\n"
        "    except OSError:\n        pass\n"
    )
    subprocess.run(["nsenter", f"--net={netns}", "python3", "-c", probe], check=True)
    spawned = json.loads(
        subprocess.run(
            ["nsenter", f"--net={netns}", "nft", "-j", "list", "table", "inet", TABLE],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    want = [0, 0]
    for item in spawned["nftables"]:
        for expr in (item.get("rule") or {}).get("expr") or []:
            if isinstance(expr, dict) and isinstance(expr.get("counter"), dict):
                want[0] += expr["counter"]["packets"]
                want[1] += expr["counter"]["bytes"]
    assert want[0] >= 5
    text = contexts.list_table(netns, TABLE)
    counts = [(int(p), int(b)) for p, b in nft._COUNTER.findall(text)]
    assert (sum(p for p, _ in counts), sum(b for _, b in counts)) == tuple(want)
    contexts.delete(netns, TABLE)
    with pytest.raises(libnft.TransactionFailed):
        contexts.list_table(netns, TABLE)


def partition_context(netns: str, backends: Backends) -> faults.FaultContext:
    action = m.TargetAction(
        target_id="ns/p",
        op="apply",
        pod_uid="pod-uid",
        container_ids=["process://1"],
        fault=m.Partition(rules=[m.PartitionRule(chain="output", external=["192.0.2.0/24"])]),
    )
    handle = runtime.ContainerHandle(
        container_id="process://1", pid=1, netns_path=netns, mnt_ns_path="/proc/1/ns/mnt", alive=True
    )
    return faults.FaultContext(
        experiment_uid="exp-backends",
        experiment_name="x",
        namespace="ns",
        action=action,
        containers=[handle],
        backends=backends,
    )


@pytest.mark.parametrize("way", ["given contexts", "spawned nft"])
def test_a_partition_runs_on_the_backends_it_is_handed(netns: str, contexts: libnft.NftContexts, way: str) -> None:
    process_wide = process_backends().nft.contexts
    tables = nft.Tables(contexts if way == "given contexts" else None)
    ctx = partition_context(netns, Backends(nft=tables))
    fault = partition.PartitionFault()
    table = partition.table_name("exp-backends", ctx.action.selector_key)
    fault.apply(ctx, ctx.action.fault)
    assert tables_in(netns) == [table]
    assert len(contexts) == (1 if way == "given contexts" else 0)  # the handed-in contexts, or none at all
    assert process_wide is None or libnft.netns_key(netns) not in process_wide._contexts  # not the process's
    fault.recover(ctx, ctx.action.fault)
    assert tables_in(netns) == []
