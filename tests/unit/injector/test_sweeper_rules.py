"""The sweeper's pure rules: which tables open entries own in a namespace, when the shaping
backend's objects must be left alone, and how the backend's findings name a device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from unit.injector.factories import entry

from chaosbus.common import messages as m
from chaosbus.injector import journal as jr
from chaosbus.injector.journal import Identity, NetnsRef
from chaosbus.injector.sweeper import _device, expected_in, helper_env


def at(inode: int, **changes: object) -> jr.Entry:
    e = entry(state=jr.ACTIVE)
    return replace(e, identity=Identity(netns=(NetnsRef("/x", inode),)), **changes)  # type: ignore[arg-type]


def test_open_partitions_own_their_tables_in_their_netns_only() -> None:
    tables, shaping = expected_in([at(7), at(8, original={"nft_table_absent": "chaosbus_other"})], 7)
    assert tables == {"chaosbus_abc"} and not shaping


def test_recovered_and_one_shot_entries_own_nothing() -> None:
    assert expected_in([at(7, state=jr.RECOVERED), at(7, lasting=False)], 7) == (set(), False)


def test_an_open_shaping_fault_protects_the_shaping_objects() -> None:
    shaping = at(7, original={}, action=m.TargetAction(target_id="t", op="apply", fault=m.Shaping()))
    assert expected_in([shaping], 7) == (set(), True)


@dataclass
class Found:
    device: str


@pytest.mark.parametrize(("item", "device"), [("eth0", "eth0"), (("eth1", "qdisc"), "eth1"), (Found("veth"), "veth")])
def test_backend_findings_name_their_device(item: object, device: str) -> None:
    assert _device(item) == device


def test_helper_marks_name_node_and_entry() -> None:
    assert helper_env("n1", "k") == {"CHAOSBUS_FAULT_NODE": "n1", "CHAOSBUS_FAULT_KEY": "k"}
