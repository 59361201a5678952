"""The orphan sweeper against the real kernel: nftables tables named chaosbus_* and marked helper
processes that belong to no open journal entry are removed; what an open entry owns, and every
namespace this node's journal never touched, are left alone.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaosbus.common import messages as m
from chaosbus.common import netns as nsutil
from chaosbus.injector import journal as jr
from chaosbus.injector.backends import nft, procs
from chaosbus.injector.backends._glue import native
from chaosbus.injector.journal import Entry, Identity, Journal, NetnsRef
from chaosbus.injector.locks import Gate
from chaosbus.injector.metrics import InjectorMetrics
from chaosbus.injector.sweeper import Sweeper, SweepReport, helper_env

from .recovery_harness import table_of, wait_for

pytestmark = pytest.mark.privileged
NODE = f"sweep-node-{os.getpid()}"  # per pytest worker: a sweep kills the helpers its journal does not own


@pytest.fixture
def spaces(kernel: None) -> Iterator[list[str]]:
    names = [f"cbtsw{os.getpid() % 100000}-{i}" for i in range(2)]
    for n in names:
        nsutil.create_named_netns(n)
    yield [nsutil.netns_path(n) for n in names]
    for n in names:
        nsutil.remove_named_netns(n)


def put_table(path: str, uid: str) -> None:
    table = table_of(uid)
    nft.apply_table(
        path, table, nft.render_partition_table(table, [nft.ResolvedRule(chain="output", peers=("192.0.2.1",))])
    )


def open_entry(uid: str, path: str) -> Entry:
    action = m.TargetAction(target_id="default/p", op="apply", fault=m.Partition())
    return Entry(
        key=jr.entry_key(uid, ".", "default/p"),
        experiment_uid=uid,
        generation=1,
        kind="NetworkChaos",
        namespace="default",
        name=uid,
        action=action,
        identity=Identity(netns=(NetnsRef(path, nsutil.netns_inode(path)),)),
        original={"nft_table_absent": table_of(uid)},
        deadline=None,
        lasting=True,
        state=jr.ACTIVE,
    )


def sweep(journal: Journal) -> SweepReport:
    # The shaping backend's own objects are swept by real injector processes (tests/e2e); calling
    # its netlink-thread machinery inside pytest trips a CPython 3.11 bug in later ast.parse calls
    # (pytest's assertion rewriting): "AST constructor recursion depth mismatch".
    return asyncio.run(Sweeper(journal, Gate(), NODE, tags=("partition",)).sweep())


def tables(path: str) -> set[str]:
    return {t for t in nft.list_tables(path) if t.startswith("chaosbus_")}


def test_orphans_go_open_faults_and_unknown_namespaces_stay(spaces: list[str], tmp_path: Path) -> None:
    known, unknown = spaces
    journal = Journal(tmp_path / "j.db")
    helpers: list[subprocess.Popen[bytes]] = []
    try:
        journal.write_intents([open_entry("keep", known)])
        for uid in ("keep", "orphan"):
            put_table(known, uid)
        put_table(unknown, "not-ours-to-judge")
        keep_key = jr.entry_key("keep", ".", "default/p")
        for key in (keep_key, "gone|.|default/p"):
            helpers.append(subprocess.Popen(["sleep", "60"], env={**os.environ, **helper_env(NODE, key)}))
        other_node = subprocess.Popen(["sleep", "60"], env={**os.environ, **helper_env("another-node", "x")})
        helpers.append(other_node)
        report = sweep(journal)
        assert tables(known) == {table_of("keep")}
        assert tables(unknown) == {table_of("not-ours-to-judge")}
        wait_for(lambda: helpers[1].poll() is not None, 5, "orphan helper killed")
        assert helpers[0].poll() is None and other_node.poll() is None
        assert sorted(report.removed)[0].startswith("helper process") and not report.errors
        assert any(table_of("orphan") in r for r in report.removed)
    finally:
        for p in helpers:
            p.kill()
            p.wait()
        nft.delete_table(unknown, table_of("not-ours-to-judge"))
        journal.close()


def test_a_recovered_entry_no_longer_protects_its_table(spaces: list[str], tmp_path: Path) -> None:
    known = spaces[0]
    journal = Journal(tmp_path / "j.db")
    try:
        e = open_entry("done", known)
        journal.write_intents([e])
        journal.commit([jr.Change(e.key, jr.RECOVERED, "recovered: test")])
        put_table(known, "done")  # a recover that "succeeded" but left its table: a bug, or a lost write
        sweep(journal)
        assert tables(known) == set()
    finally:
        journal.close()


def test_a_namespace_that_is_gone_leaves_the_sweeper_scope(spaces: list[str], tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    try:
        name = f"cbtsw{os.getpid() % 100000}-gone"
        path = nsutil.create_named_netns(name)
        journal.write_intents([open_entry("x", path)])
        nsutil.remove_named_netns(name)
        report = sweep(journal)
        assert report.netns == 0 and journal.netns() == []
    finally:
        journal.close()


def test_killing_a_helper_never_touches_the_sweeper_itself() -> None:
    with pytest.raises(ValueError):
        procs.kill_tree(os.getpid())


def test_pod_failure_holds_no_open_entry_placed_are_removed(
    spaces: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaosbus.common import podhold

    monkeypatch.setenv("CHAOSBUS_STATE_DIR", str(tmp_path / "state"))
    known = spaces[0]
    holds = podhold.pod_dir(os.path.basename(known))
    podhold.make_dir(holds)
    journal = Journal(tmp_path / "j.db")
    try:
        keep = jr.entry_key("keep", ".", "default/p")
        action = m.TargetAction(target_id="default/p", op="apply", fault=m.PodFailure())
        journal.write_intents(
            [
                Entry(
                    key=keep,
                    experiment_uid="keep",
                    generation=1,
                    kind="PodChaos",
                    namespace="default",
                    name="keep",
                    action=action,
                    identity=Identity(netns=(NetnsRef(known, nsutil.netns_inode(known)),)),
                    original={"netns": os.path.basename(known), "hold": podhold.file_name(keep)},
                    deadline=None,
                    lasting=True,
                    state=jr.ACTIVE,
                )
            ]
        )
        for key in (keep, "gone|.|default/p"):
            podhold.put(holds, podhold.Hold(key=key, node=NODE, experiment="default/x"))
        report = asyncio.run(Sweeper(journal, Gate(), NODE, tags=("pod-failure",)).sweep())
        assert podhold.names(holds) == [podhold.file_name(keep)]
        assert report.removed == [f"pod-failure hold {podhold.file_name('gone|.|default/p')} in {known}"]
    finally:
        journal.close()


def test_one_dump_lists_what_nft_lists(spaces: list[str]) -> None:
    path = spaces[0]
    # Enough tables that the kernel's answer spans several reads; another family's table is none of ours.
    names = [f"chaosbus_many{i}" for i in range(300)]
    script = "".join(f"add table inet {n}\n" for n in names) + "add table ip someone_elses\n"
    subprocess.run([native.helper("nsexec"), "--net", path, "--", "nft", "-f", "-"], input=script.encode(), check=True)
    listed = nft.list_tables_direct(path)
    assert sorted(listed) == sorted(nft.list_tables(path)) == sorted(names)
    assert nft.list_tables_direct(spaces[1]) == []


def test_a_sweep_lists_each_netns_once_spawns_nothing_and_sees_fresh_tables(
    spaces: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "j.db")
    sleeper = subprocess.Popen([native.helper("nsexec"), "--net", spaces[0], "--", "sleep", "60"])
    try:
        journal.write_intents([open_entry("keep", p) for p in spaces])
        metrics = InjectorMetrics()
        sweeper = Sweeper(journal, Gate(), NODE, metrics=metrics)  # every fault's finder
        wait_for(lambda: sleeper.pid in procs.NetnsProcesses().pids_in(nsutil.netns_inode(spaces[0])), 5, "in netns")
        asyncio.run(sweeper.sweep())  # the first sweep of a process reads its own vDSO layout once
        listings: list[str] = []
        spawned: list[object] = []
        real_listing, real_popen = nft.list_tables_direct, subprocess.Popen.__init__

        def listing(path: str) -> list[str]:
            listings.append(path)
            return real_listing(path)

        def popen(self: subprocess.Popen[bytes], *args: object, **kwargs: object) -> None:
            spawned.append(args[0] if args else kwargs.get("args"))
            real_popen(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(nft, "list_tables_direct", listing)
        monkeypatch.setattr(subprocess.Popen, "__init__", popen)
        for uid in ("orphan-1", "orphan-2"):  # each sweep reads the kernel again: no listing outlives it
            put_table(spaces[1], uid)
            spawned.clear()
            report = asyncio.run(sweeper.sweep())
            assert report.removed == [f"nft table {table_of(uid)} in {spaces[1]}"] and not report.errors
            assert spawned == []
        # three nft-based finders, two netns, two sweeps: one dump per netns and sweep
        assert sorted(listings) == sorted(spaces * 2)
        assert metrics.registry.get_sample_value("chaosbus_injector_sweep_seconds_count") == 3
    finally:
        sleeper.kill()
        sleeper.wait()
        journal.close()
