"""Partition tables as text: pure rendering, no kernel."""

from __future__ import annotations

import re

import pytest

from chaosbus.common.messages import Partition, PartitionRule
from chaosbus.injector.backends.nft import Endpoint, ResolvedRule, render_partition_table
from chaosbus.injector.faults import FaultError
from chaosbus.injector.faults.partition import resolve_rules, table_name

T = "chaosbus_0123456789ab"


def _drop_lines(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if line.strip().endswith("drop")]


def _chain(script: str, hook: str) -> str:
    match = re.search(rf"chain {hook} {{(.*?)\n\t}}", script, re.S)
    assert match, f"no {hook} chain in\n{script}"
    return match.group(1)


def test_output_rule_drops_original_direction_to_peers() -> None:
    script = render_partition_table(T, [ResolvedRule(chain="output", peers=("10.214.1.11",))])
    assert script.startswith(f"table inet {T} {{")
    assert "type filter hook output priority 0; policy accept;" in script
    assert "elements = { 10.214.1.11 }" in script
    assert _drop_lines(script) == ["ip daddr @r0_addr ct direction original counter drop"]
    assert "chain input" not in script


def test_input_rule_matches_source() -> None:
    script = render_partition_table(T, [ResolvedRule(chain="input", peers=("10.214.1.10",))])
    assert _drop_lines(script) == ["ip saddr @r0_addr ct direction original counter drop"]
    assert "hook input" in script and "hook output" not in script


def test_no_peers_drops_everything_but_loopback() -> None:
    script = render_partition_table(T, [ResolvedRule(chain="output"), ResolvedRule(chain="input")])
    assert 'oifname != "lo" ct direction original counter drop' in _chain(script, "output")
    assert 'iifname != "lo" ct direction original counter drop' in _chain(script, "input")
    assert "set " not in script


@pytest.mark.parametrize(("chain", "addr", "port"), [("output", "daddr", "dport"), ("input", "saddr", "sport")])
def test_external_with_port_uses_concatenated_set(chain: str, addr: str, port: str) -> None:
    rule = ResolvedRule(chain=chain, external=(Endpoint("10.0.0.0/8", 443), Endpoint("1.2.3.4/32", 53)))  # type: ignore[arg-type]
    script = render_partition_table(T, [rule])
    assert "type ipv4_addr . inet_service" in script
    assert "elements = { 1.2.3.4 . 53, 10.0.0.0/8 . 443 }" in script
    assert _drop_lines(script) == [
        f"meta l4proto {{ tcp, udp, sctp, dccp }} ip {addr} . th {port} @r0_port ct direction original counter drop"
    ]


def test_peers_and_portless_externals_share_one_collapsed_set() -> None:
    rule = ResolvedRule(
        chain="output",
        peers=("10.1.2.3", "10.1.2.3"),
        external=(Endpoint("10.0.0.0/8"), Endpoint("192.168.0.0/24"), Endpoint("8.8.8.8/32", 53)),
    )
    script = render_partition_table(T, [rule])
    # Overlapping elements make nft reject an interval set, so 10.1.2.3 folds into 10.0.0.0/8.
    assert "elements = { 10.0.0.0/8, 192.168.0.0/24 }" in script
    assert "elements = { 8.8.8.8 . 53 }" in script
    assert len(_drop_lines(script)) == 2


def test_every_drop_carries_ct_direction_original() -> None:
    rules = [
        ResolvedRule(chain="output", peers=("10.0.0.1",), external=(Endpoint("1.1.1.1/32", 80),)),
        ResolvedRule(chain="input"),
        ResolvedRule(chain="input", peers=("10.0.0.2",), device="eth0"),
    ]
    drops = _drop_lines(render_partition_table(T, rules))
    assert len(drops) == 4
    assert all("ct direction original counter drop" in line for line in drops)


def test_device_restricts_the_interface() -> None:
    script = render_partition_table(
        T,
        [ResolvedRule(chain="output", peers=("10.0.0.1",), device="eth0"), ResolvedRule(chain="input", device="eth0")],
    )
    assert 'oifname "eth0" ip daddr @r0_addr ct direction original counter drop' in script
    assert 'iifname "eth0" ct direction original counter drop' in script


def test_rules_for_one_chain_get_distinct_sets_and_render_deterministically() -> None:
    rules = [ResolvedRule(chain="output", peers=("10.0.0.1",)), ResolvedRule(chain="output", peers=("10.0.0.2",))]
    script = render_partition_table(T, rules)
    assert "@r0_addr" in script and "@r1_addr" in script
    assert script.count("chain output") == 1
    assert script == render_partition_table(T, rules)


@pytest.mark.parametrize(
    "rule",
    [
        ResolvedRule(chain="output", peers=("10.0.0.1; flush ruleset",)),
        ResolvedRule(chain="output", peers=("fe80::1",)),
        ResolvedRule(chain="output", device='eth0" accept; flush ruleset; "'),
        ResolvedRule(chain="output", external=(Endpoint("10.0.0.0/8", 0),)),
        ResolvedRule(chain="output", external=(Endpoint("10.0.0.0/8", 65536),)),
        ResolvedRule(chain="forward", peers=("10.0.0.1",)),  # type: ignore[arg-type]
    ],
)
def test_nothing_unchecked_reaches_the_script(rule: ResolvedRule) -> None:
    with pytest.raises(ValueError):
        render_partition_table(T, [rule])


@pytest.mark.parametrize("table", ["filter", "chaosbus_", "chaosbus_x y", "chaosbus_a}", "CHAOSBUS_ab"])
def test_table_names_are_checked(table: str) -> None:
    with pytest.raises(ValueError):
        render_partition_table(table, [])


def test_table_name_is_per_experiment_and_selector() -> None:
    name = table_name("uid-1", ".")
    assert re.fullmatch(r"chaosbus_[0-9a-f]{12}", name)
    assert name == table_name("uid-1", ".")
    assert len({name, table_name("uid-2", "."), table_name("uid-1", "target")}) == 3


def test_resolve_rules_parses_externals_and_resolves_names() -> None:
    spec = Partition(
        device="eth0",
        rules=[
            PartitionRule(chain="output", peers=["10.0.0.1"], external=["10.9.0.0/16", "1.2.3.4:80", "localhost:8080"])
        ],
    )
    [rule] = resolve_rules(spec)
    assert rule.device == "eth0" and rule.peers == ("10.0.0.1",)
    assert rule.external == (Endpoint("10.9.0.0/16"), Endpoint("1.2.3.4/32", 80), Endpoint("127.0.0.1/32", 8080))


def test_unparsable_external_is_permanent_unresolvable_is_retryable() -> None:
    bad = Partition(rules=[PartitionRule(chain="output", external=["not a host!"])])
    with pytest.raises(FaultError) as err:
        resolve_rules(bad)
    assert not err.value.retryable
    unknown = Partition(rules=[PartitionRule(chain="output", external=["nonexistent.invalid"])])
    with pytest.raises(FaultError) as err:
        resolve_rules(unknown)
    assert err.value.retryable and "nonexistent.invalid" in err.value.message


def test_exemptions_are_accepted_before_any_drop_in_every_chain() -> None:
    script = render_partition_table(
        T,
        [ResolvedRule(chain="output"), ResolvedRule(chain="input", peers=("10.0.0.9",))],
        exempt=[Endpoint("127.0.0.1/32", 4222), Endpoint("10.96.0.0/12")],
    )
    assert "set ex_addr" in script and "elements = { 10.96.0.0/12 }" in script
    assert "set ex_port" in script and "elements = { 127.0.0.1 . 4222 }" in script
    for hook in ("output", "input"):
        lines = [ln.strip() for ln in _chain(script, hook).splitlines() if ln.strip() and "hook" not in ln]
        assert lines[:4] == [
            "ip daddr @ex_addr accept",
            "ip saddr @ex_addr accept",
            "meta l4proto { tcp, udp, sctp, dccp } ip daddr . th dport @ex_port accept",
            "meta l4proto { tcp, udp, sctp, dccp } ip saddr . th sport @ex_port accept",
        ]
        assert lines[-1].endswith("drop")


def test_no_chain_no_exemption_sets() -> None:
    script = render_partition_table(T, [], exempt=[Endpoint("127.0.0.1/32", 4222)])
    assert "ex_port" not in script


def test_a_deadline_bounds_every_drop_in_the_kernel_and_no_accept() -> None:
    rules = [
        ResolvedRule(chain="output", peers=("10.0.0.1",), external=(Endpoint("1.1.1.1/32", 80),)),
        ResolvedRule(chain="input"),
    ]
    script = render_partition_table(T, rules, [Endpoint("10.9.9.9/32", 4222)], until=1795335045.2)
    drops = _drop_lines(script)
    assert len(drops) == 3 and all(line.strip().startswith("meta time < 1795335046 ") for line in drops)
    assert all("meta time" not in line for line in script.splitlines() if line.strip().endswith("accept"))
    assert "meta time" not in render_partition_table(T, rules)  # no duration: until recovered


@pytest.mark.parametrize("until", [0.0, -5.0, float("inf"), float("nan")])
def test_a_nonsense_deadline_is_refused(until: float) -> None:
    with pytest.raises(ValueError, match="deadline"):
        render_partition_table(T, [ResolvedRule(chain="output")], until=until)
