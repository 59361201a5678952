"""The sweeper's pure rules: which orphans a fault's open entries own in a namespace (partition:
the tables its entries name; shaping: all of them while one is open there).
"""

from __future__ import annotations

from dataclasses import replace

from unit.injector.factories import entry

from chaosbus.common import messages as m
from chaosbus.injector import faults
from chaosbus.injector import journal as jr
from chaosbus.injector.journal import Identity, NetnsRef
from chaosbus.injector.sweeper import helper_env, originals_in


def at(inode: int, **changes: object) -> jr.Entry:
    e = entry(state=jr.ACTIVE)
    return replace(e, identity=Identity(netns=(NetnsRef("/x", inode),)), **changes)  # type: ignore[arg-type]


def owned(entries: list[jr.Entry], inode: int, tag: str) -> set[str] | None:
    return faults.orphans()[tag].owned(originals_in(entries, inode, tag))


def test_open_partitions_own_their_tables_in_their_netns_only() -> None:
    entries = [at(7), at(8, original={"nft_table_absent": "chaosbus_other"})]
    assert owned(entries, 7, "partition") == {"chaosbus_abc"}
    assert owned(entries, 7, "network-shaping") == set()


def test_recovered_and_one_shot_entries_own_nothing() -> None:
    entries = [at(7, state=jr.RECOVERED), at(7, lasting=False)]
    assert owned(entries, 7, "partition") == set()


def test_an_open_shaping_fault_protects_the_shaping_objects() -> None:
    shaping = at(7, original={}, action=m.TargetAction(target_id="t", op="apply", fault=m.Shaping()))
    assert owned([shaping], 7, "network-shaping") is None
    assert owned([shaping], 8, "network-shaping") == set()
    assert owned([shaping], 7, "partition") == set()


def test_faults_that_declare_orphans() -> None:
    assert {tag: o.what for tag, o in faults.orphans().items()} == {
        "partition": "nft table",
        "network-shaping": "traffic shaping",
        "dns": "nft table",
        "http": "nft table",
        "time-skew": "time skew",
        "pod-failure": "pod-failure hold",
        "go-sql-error": "go sql error",
        "io": "iofs mount",
    }
    assert list(faults.orphans(tags=["partition", "pod-kill"])) == ["partition"]


def test_helper_marks_name_node_and_entry() -> None:
    assert helper_env("n1", "k") == {"CHAOSBUS_FAULT_NODE": "n1", "CHAOSBUS_FAULT_KEY": "k"}
