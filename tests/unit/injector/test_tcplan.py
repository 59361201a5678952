"""The shaping planner as data: classes per combination of rules, destination precedence,
handle stability across plans, and the diff that turns one tree into the next.
"""

from __future__ import annotations

import pytest

from chaosbus.common.messages import NetemParams, TbfParams
from chaosbus.injector.backends.tcplan import (
    ROOT,
    Dest,
    PlanError,
    Rule,
    TcPlan,
    dest,
    diff,
    ours,
    plan,
)

DELAY = NetemParams(latency_ns=100_000_000)
LOSS = NetemParams(loss=25.0)
BW = TbfParams(rate=125_000, limit=20_000, buffer=10_000)


def classes_of(p: TcPlan, d: Dest) -> list[str]:
    """The owners+kinds a packet to `d` meets, in chain order (what the classifier would pick)."""
    for m in p.matches:
        if m.dest.covers(d):
            return _chain(p, m.classid)
    return _chain(p, p.default) if p.default else []


def _chain(p: TcPlan, classid: int) -> list[str]:
    [cls] = [c for c in p.classes if c.classid == classid]
    return [f"{s.owner}:{s.kind}" for s in cls.stages]


def test_no_rules_no_tree() -> None:
    assert plan([]) is None
    changes = diff(None, None)
    assert changes.empty


def test_unfiltered_rule_is_the_default_class() -> None:
    p = plan([Rule("a", netem=DELAY)])
    assert p is not None and p.matches == ()
    assert p.default == ROOT | 1
    assert _chain(p, p.default) == ["a:netem"]


def test_filtered_rule_matches_only_its_peers() -> None:
    p = plan([Rule("a", tbf=BW, dests=(dest("10.0.0.2"), dest("10.0.0.3")))])
    assert p is not None and p.default == 0
    assert [str(m.dest.network) for m in p.matches] == ["10.0.0.2/32", "10.0.0.3/32"]
    assert classes_of(p, dest("10.0.0.2")) == ["a:tbf"]
    assert classes_of(p, dest("10.0.0.9")) == []


def test_delay_and_loss_on_one_peer_chain_in_one_class_netem_first() -> None:
    p = plan(
        [
            Rule("b-loss", netem=LOSS, dests=(dest("10.0.0.2"),)),
            Rule("a-bw", tbf=BW, dests=(dest("10.0.0.2"),)),
            Rule("c-delay", netem=DELAY, dests=(dest("10.0.0.2"),)),
        ]
    )
    assert p is not None and len(p.classes) == 1
    assert classes_of(p, dest("10.0.0.2")) == ["b-loss:netem", "c-delay:netem", "a-bw:tbf"]
    [cls] = p.classes
    # each stage hangs under the previous one (netem/tbf class :1), the first under the htb class
    assert [s.parent for s in cls.stages] == [cls.classid, cls.stages[0].handle | 1, cls.stages[1].handle | 1]
    assert all(ours(s.handle) for s in cls.stages) and len({s.handle for s in cls.stages}) == 3


def test_overlapping_destinations_meet_every_rule_that_covers_them() -> None:
    p = plan(
        [
            Rule("net", netem=DELAY, dests=(dest("10.0.0.0/24"),)),
            Rule("port", tbf=BW, dests=(dest("10.0.0.0/16", 80),)),
            Rule("all", netem=LOSS),
        ]
    )
    assert p is not None
    assert classes_of(p, dest("10.0.0.7", 80)) == ["all:netem", "net:netem", "port:tbf"]
    assert classes_of(p, dest("10.0.0.7", 81)) == ["all:netem", "net:netem"]
    assert classes_of(p, dest("10.0.9.7", 80)) == ["all:netem", "port:tbf"]
    assert classes_of(p, dest("192.168.1.1")) == ["all:netem"]


def test_matches_are_most_specific_first() -> None:
    p = plan(
        [
            Rule("wide", netem=DELAY, dests=(dest("10.0.0.0/8"),)),
            Rule("narrow", tbf=BW, dests=(dest("10.1.0.0/16", 443), dest("10.1.2.3"))),
        ]
    )
    assert p is not None
    keys = [m.dest.specificity for m in p.matches]
    assert keys == sorted(keys, reverse=True)
    # the /32 with port comes from intersecting the /32 with the /16:443
    assert p.matches[0].dest == dest("10.1.2.3", 443)


def test_same_rules_plan_the_same_tree() -> None:
    rules = [Rule("a", tbf=BW, dests=(dest("10.0.0.2"),)), Rule("b", netem=DELAY)]
    first = plan(rules)
    assert plan(list(reversed(rules))) == first
    assert diff(first, plan(rules, previous=first)).empty


def test_adding_an_experiment_keeps_the_others_handles() -> None:
    a = Rule("a", tbf=BW, dests=(dest("10.0.0.2"),))
    b = Rule("b", netem=DELAY, dests=(dest("10.0.0.3"),))
    first = plan([a])
    second = plan([a, b], previous=first)
    assert first is not None and second is not None
    [kept] = [c for c in second.classes if c.key == first.classes[0].key]
    assert kept == first.classes[0]
    changes = diff(first, second)
    assert [c.key for c in changes.add] == [(("b", DELAY, None),)] and changes.remove == ()
    assert changes.program and not changes.create_root
    new = changes.add[0]
    assert new.classid != kept.classid and new.stages[0].handle != kept.stages[0].handle


def test_removing_an_experiment_removes_only_its_classes() -> None:
    a = Rule("a", tbf=BW, dests=(dest("10.0.0.2"),))
    b = Rule("b", netem=DELAY, dests=(dest("10.0.0.3"),))
    both = plan([a, b])
    only_a = plan([a], previous=both)
    changes = diff(both, only_a)
    assert changes.add == () and [c.key for c in changes.remove] == [(("b", DELAY, None),)]
    assert changes.program


def test_a_peer_shared_by_two_rules_moves_to_a_combined_class() -> None:
    a = Rule("a", tbf=BW, dests=(dest("10.0.0.2"),))
    b = Rule("b", netem=DELAY, dests=(dest("10.0.0.2"),))
    first = plan([a])
    second = plan([a, b], previous=first)
    changes = diff(first, second)
    assert [c.key for c in changes.add] == [(("b", DELAY, None), ("a", None, BW))]
    assert [c.key for c in changes.remove] == [(("a", None, BW),)]
    # numbers of a class still installed are not reused while it is being replaced
    assert changes.add[0].classid != changes.remove[0].classid


def test_last_rule_gone_removes_the_root() -> None:
    first = plan([Rule("a", netem=DELAY)])
    changes = diff(first, plan([], previous=first))
    assert changes.remove_root and not changes.add


def test_new_tree_creates_the_root_and_the_program() -> None:
    changes = diff(None, plan([Rule("a", netem=DELAY)]))
    assert changes.create_root and changes.program and len(changes.add) == 1


def test_exemptions_are_part_of_the_program_inputs() -> None:
    rules = [Rule("a", netem=DELAY)]
    first = plan(rules)
    second = plan(rules, exempt=[dest("127.0.0.1", 4222)], previous=first)
    changes = diff(first, second)
    assert changes.program and not changes.add and not changes.remove


def test_changed_parameters_of_one_owner_give_a_new_class() -> None:
    first = plan([Rule("a", tbf=BW)])
    faster = TbfParams(rate=250_000, limit=20_000, buffer=10_000)
    second = plan([Rule("a", tbf=faster)], previous=first)
    changes = diff(first, second)
    assert len(changes.add) == 1 and len(changes.remove) == 1
    assert changes.add[0].stages[0].tbf == faster


def test_handle_range_is_bounded() -> None:
    rules = [
        Rule(f"r{i:03}", netem=NetemParams(latency_ns=i + 1), dests=(dest(f"10.0.{i // 250}.{i % 250 + 1}"),))
        for i in range(256)
    ]
    with pytest.raises(PlanError, match="at most 255"):
        plan(rules)


@pytest.mark.parametrize(
    ("handle", "mine"),
    [(0xCB000000, True), (0xCBFF0000, True), (0xCB010001, True), (0x10000, False), (0xCC000000, False), (0, False)],
)
def test_ours(handle: int, mine: bool) -> None:
    assert ours(handle) is mine


def test_dest_intersections() -> None:
    assert dest("10.0.0.0/8").intersect(dest("10.1.0.0/16", 80)) == dest("10.1.0.0/16", 80)
    assert dest("10.0.0.0/8", 80).intersect(dest("10.0.0.1", 81)) is None
    assert dest("10.0.0.0/24").intersect(dest("10.0.1.0/24")) is None
    assert dest("10.0.0.0/8").covers(dest("10.2.3.4", 5)) and not dest("10.0.0.0/8", 5).covers(dest("10.2.3.4"))
