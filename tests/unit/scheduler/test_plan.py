"""Plan: the records selection produces per kind, the fault carried per target, and NetworkChaos
partition rules per side (selector "." and target ".Target") for each direction.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from chaosbus.common import messages as m
from chaosbus.common.crd import ChaosObject, decode_object
from chaosbus.scheduler import plan
from chaosbus.scheduler.plan import MAIN, TARGET, Selected
from chaosbus.scheduler.selection import SelectionConfig, SelectionError, World


def pod(
    name: str,
    ip: str = "",
    *,
    app: str = "web",
    containers: tuple[str, ...] = ("main",),
    uid: str | None = None,
    node: str = "n1",
) -> m.TargetPod:
    return m.TargetPod(
        uid=uid or f"uid-{name}",
        namespace="default",
        name=name,
        labels={"app": app},
        node=node,
        pod_ip=ip,
        phase="Running",
        containers=[m.ContainerRef(name=c, container_id=f"process://{name}-{c}") for c in containers],
    )


WEB = [pod("web-0", "10.0.0.1"), pod("web-1", "10.0.0.2")]
DB = [pod("db-0", "10.0.1.1", app="db"), pod("db-1", "10.0.1.2", app="db")]
SIDECAR = pod("side-0", "10.0.2.1", app="side", containers=("app", "proxy", "log"))


def world(*pods: m.TargetPod) -> World:
    return World(pods={p.key: p for p in pods}, namespaces={}, nodes={})


def obj(kind: str, **spec: Any) -> ChaosObject:
    spec.setdefault("mode", "all")
    spec.setdefault("selector", {"labelSelectors": {"app": "web"}})
    return decode_object(
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": kind,
            "metadata": {"name": "x", "namespace": "default", "uid": "u1"},
            "spec": spec,
        }
    )


def network(direction: str = "to", target: bool = True, external: list[str] | None = None, **spec: Any) -> ChaosObject:
    if target:
        spec["target"] = {"mode": "all", "selector": {"labelSelectors": {"app": "db"}}}
    if external:
        spec["externalTargets"] = external
    return obj("NetworkChaos", action="partition", direction=direction, **spec)


def select(o: ChaosObject, *pods: m.TargetPod) -> list[Selected]:
    return plan.select(o, world(*(pods or (*WEB, *DB, SIDECAR))), SelectionConfig(), random.Random(1))


def faults_by_side(o: ChaosObject, *pods: m.TargetPod) -> dict[tuple[str, str], m.Partition]:
    chosen = select(o, *pods)
    out = {}
    for s in chosen:
        fault = plan.fault_for(o, s, chosen)
        assert isinstance(fault, m.Partition)
        out[(s.record_id, s.selector_key)] = fault
    return out


def rules(fault: m.Partition) -> list[tuple[str, list[str], list[str]]]:
    return [(r.chain, r.peers, r.external) for r in fault.rules]


WEB_IPS = ["10.0.0.1", "10.0.0.2"]
DB_IPS = ["10.0.1.1", "10.0.1.2"]


# --- records -------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["pod-kill", "pod-failure"])
def test_pod_level_podchaos_records_are_pods(action: str) -> None:
    chosen = select(obj("PodChaos", action=action))
    assert [(s.record_id, s.selector_key, s.container) for s in chosen] == [
        ("default/web-0", MAIN, None),
        ("default/web-1", MAIN, None),
    ]


def test_container_kill_records_are_the_named_containers() -> None:
    o = obj(
        "PodChaos",
        action="container-kill",
        containerNames=["proxy", "log"],
        selector={"labelSelectors": {"app": "side"}},
    )
    chosen = select(o)
    assert [(s.record_id, s.container.name if s.container else None) for s in chosen] == [
        ("default/side-0/proxy", "proxy"),
        ("default/side-0/log", "log"),
    ]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([], ["default/side-0/app"]),
        (["log"], ["default/side-0/log"]),
    ],
)
def test_helloworld_records_are_containers(names: list[str], expected: list[str]) -> None:
    spec: dict[str, Any] = {"selector": {"labelSelectors": {"app": "side"}}}
    if names:
        spec["containerNames"] = names
    assert [s.record_id for s in select(obj("HelloWorldChaos", **spec))] == expected


def test_network_records_cover_both_sides() -> None:
    chosen = select(network())
    assert [(s.record_id, s.selector_key) for s in chosen] == [
        ("default/web-0", MAIN),
        ("default/web-1", MAIN),
        ("default/db-0", TARGET),
        ("default/db-1", TARGET),
    ]


def test_network_without_target_has_only_selector_records() -> None:
    assert {s.selector_key for s in select(network(target=False))} == {MAIN}


def test_empty_target_selection_is_an_error_naming_spec_target() -> None:
    with pytest.raises(SelectionError, match=r"^spec\.target\.selector: no pod is selected"):
        select(network(), *WEB)


# --- faults per kind -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fault"),
    [
        ({"action": "pod-kill"}, m.PodKill(grace_period=0)),
        ({"action": "pod-kill", "gracePeriod": 30}, m.PodKill(grace_period=30)),
        ({"action": "pod-failure"}, m.PodFailure()),
    ],
)
def test_podchaos_fault(spec: dict[str, Any], fault: m.Fault) -> None:
    o = obj("PodChaos", **spec)
    chosen = select(o)
    assert {plan.fault_for(o, s, chosen) for s in chosen} == {fault}


def test_container_kill_fault_names_the_records_container() -> None:
    o = obj(
        "PodChaos",
        action="container-kill",
        containerNames=["proxy", "log"],
        selector={"labelSelectors": {"app": "side"}},
    )
    chosen = select(o)
    assert [plan.fault_for(o, s, chosen) for s in chosen] == [
        m.ContainerKill(container_names=["proxy"]),
        m.ContainerKill(container_names=["log"]),
    ]


def test_helloworld_fault_names_the_records_container() -> None:
    o = obj("HelloWorldChaos", selector={"labelSelectors": {"app": "side"}})
    chosen = select(o)
    assert [plan.fault_for(o, s, chosen) for s in chosen] == [m.HelloWorld(container_names=["app"])]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"action": "pod-kill"}, True),
        ({"action": "container-kill", "containerNames": ["a"]}, True),
        ({"action": "pod-failure"}, False),
    ],
)
def test_one_shot(spec: dict[str, Any], expected: bool) -> None:
    assert plan.one_shot(obj("PodChaos", **spec)) is expected


@pytest.mark.parametrize(
    ("action", "block"),
    [
        ("delay", {"delay": {"latency": "100ms"}}),
        ("loss", {"loss": {"loss": "25"}}),
        ("bandwidth", {"bandwidth": {"rate": "1mbps", "limit": 100, "buffer": 100}}),
    ],
)
def test_non_partition_network_action_never_becomes_a_partition(action: str, block: dict[str, Any]) -> None:
    o = obj("NetworkChaos", action=action, **block)
    chosen = select(o)
    try:
        faults = [plan.fault_for(o, s, chosen) for s in chosen]
    except Exception:  # refusing to plan an unsupported action is an acceptable outcome
        return
    assert not any(isinstance(f, m.Partition) for f in faults)


# --- partition rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "main_rules", "target_rules"),
    [
        ("to", [("output", DB_IPS, [])], [("input", WEB_IPS, [])]),
        ("from", [("input", DB_IPS, [])], [("output", WEB_IPS, [])]),
        ("both", [("output", DB_IPS, []), ("input", DB_IPS, [])], [("output", WEB_IPS, []), ("input", WEB_IPS, [])]),
    ],
)
def test_partition_direction_table(direction: str, main_rules: list[Any], target_rules: list[Any]) -> None:
    by_side = faults_by_side(network(direction))
    assert rules(by_side[("default/web-0", MAIN)]) == main_rules
    assert rules(by_side[("default/web-1", MAIN)]) == main_rules
    assert rules(by_side[("default/db-0", TARGET)]) == target_rules
    assert rules(by_side[("default/db-1", TARGET)]) == target_rules


@pytest.mark.parametrize(
    ("direction", "chains"), [("to", ["output"]), ("from", ["input"]), ("both", ["output", "input"])]
)
def test_no_target_and_no_externals_drops_the_whole_chain(direction: str, chains: list[str]) -> None:
    by_side = faults_by_side(network(direction, target=False))
    assert {k: rules(v) for k, v in by_side.items()} == {
        ("default/web-0", MAIN): [(c, [], []) for c in chains],
        ("default/web-1", MAIN): [(c, [], []) for c in chains],
    }


def test_externals_go_on_the_selector_side_only() -> None:
    ext = ["1.2.3.4", "example.com:443"]
    by_side = faults_by_side(network("both", external=ext))
    assert rules(by_side[("default/web-0", MAIN)]) == [("output", DB_IPS, ext), ("input", DB_IPS, ext)]
    assert all(r.external == [] for r in by_side[("default/db-0", TARGET)].rules)


def test_externals_without_target_filter_by_external_only() -> None:
    by_side = faults_by_side(network("to", target=False, external=["10.9.0.0/16"]))
    assert rules(by_side[("default/web-0", MAIN)]) == [("output", [], ["10.9.0.0/16"])]


def test_target_pods_without_ips_never_become_a_whole_chain_blackhole() -> None:
    no_ip_db = [pod("db-0", app="db"), pod("db-1", app="db")]
    by_side = faults_by_side(network("both"), *WEB, *no_ip_db)
    assert by_side[("default/web-0", MAIN)].rules == []
    assert by_side[("default/db-0", TARGET)].rules == [
        m.PartitionRule(chain="output", peers=WEB_IPS),
        m.PartitionRule(chain="input", peers=WEB_IPS),
    ]


def test_selector_pods_without_ips_give_the_target_side_no_rules() -> None:
    no_ip_web = [pod("web-0"), pod("web-1")]
    by_side = faults_by_side(network("to"), *no_ip_web, *DB)
    assert by_side[("default/db-0", TARGET)].rules == []
    assert rules(by_side[("default/web-0", MAIN)]) == [("output", DB_IPS, [])]


def test_peers_without_ips_are_left_out_of_the_peer_list() -> None:
    by_side = faults_by_side(network("to"), *WEB, DB[0], pod("db-9", app="db"))
    assert rules(by_side[("default/web-0", MAIN)]) == [("output", ["10.0.1.1"], [])]


def test_partition_peers_are_sorted_and_unique() -> None:
    twins = [pod("db-b", "10.0.1.9", app="db"), pod("db-a", "10.0.1.9", app="db"), pod("db-c", "10.0.1.3", app="db")]
    by_side = faults_by_side(network("to"), *WEB, *twins)
    assert by_side[("default/web-0", MAIN)].rules[0].peers == ["10.0.1.3", "10.0.1.9"]


def test_same_pod_on_both_sides_gets_a_fault_per_side() -> None:
    o = obj(
        "NetworkChaos",
        action="partition",
        direction="to",
        target={"mode": "all", "selector": {"labelSelectors": {"app": "web"}}},
    )
    by_side = faults_by_side(o, *WEB)
    assert rules(by_side[("default/web-0", MAIN)]) == [("output", WEB_IPS, [])]
    assert rules(by_side[("default/web-0", TARGET)]) == [("input", WEB_IPS, [])]


def test_devices_per_side() -> None:
    by_side = faults_by_side(network("to", device="eth1@if9", targetDevice="eth2"))
    assert by_side[("default/web-0", MAIN)].device == "eth1"
    assert by_side[("default/db-0", TARGET)].device == "eth2"


# --- container ids -------------------------------------------------------------------------------


def test_pod_target_gets_every_container_id() -> None:
    s = Selected("default/side-0", MAIN, SIDECAR)
    assert plan.container_ids(s, None) == ["process://side-0-app", "process://side-0-proxy", "process://side-0-log"]


def test_container_target_gets_only_its_container_id() -> None:
    s = Selected("default/side-0/proxy", MAIN, SIDECAR, SIDECAR.containers[1])
    assert plan.container_ids(s, None) == ["process://side-0-proxy"]


def test_containers_without_ids_are_skipped() -> None:
    p = m.TargetPod(
        uid="u",
        namespace="default",
        name="p",
        containers=[m.ContainerRef(name="a"), m.ContainerRef(name="b", container_id="process://b")],
    )
    assert plan.container_ids(Selected("default/p", MAIN, p), None) == ["process://b"]


def test_live_pod_with_the_same_uid_is_preferred() -> None:
    """A restarted container has a new id: the command must carry the live one."""
    old = pod("web-0", "10.0.0.1")
    live = m.TargetPod(
        uid=old.uid,
        namespace="default",
        name="web-0",
        containers=[m.ContainerRef(name="main", container_id="process://restarted")],
    )
    s = Selected("default/web-0/main", MAIN, old, old.containers[0])
    assert plan.container_ids(s, live) == ["process://restarted"]


def test_recreated_pod_with_another_uid_is_not_used() -> None:
    old = pod("web-0", "10.0.0.1")
    impostor = m.TargetPod(
        uid="uid-new",
        namespace="default",
        name="web-0",
        containers=[m.ContainerRef(name="main", container_id="process://someone-else")],
    )
    assert plan.container_ids(Selected("default/web-0", MAIN, old), impostor) == ["process://web-0-main"]


# --- shaping (netem family, bandwidth) -----------------------------------------------------------


def shaping_by_side(o: ChaosObject, *pods: m.TargetPod) -> dict[tuple[str, str], m.Shaping]:
    chosen = select(o, *pods)
    out = {}
    for s in chosen:
        fault = plan.fault_for(o, s, chosen)
        assert isinstance(fault, m.Shaping)
        out[(s.record_id, s.selector_key)] = fault
    return out


def shaping(action: str = "delay", direction: str = "to", target: bool = True, **spec: Any) -> ChaosObject:
    spec.setdefault("delay", {"latency": "100ms"})
    if target:
        spec["target"] = {"mode": "all", "selector": {"labelSelectors": {"app": "db"}}}
    return obj("NetworkChaos", action=action, direction=direction, **spec)


def active(f: m.Shaping) -> tuple[list[str], list[str], bool] | None:
    return (f.peers, f.external, f.unfiltered) if f.netem or f.tbf else None


@pytest.mark.parametrize(
    ("direction", "web", "db"),
    [
        ("to", (DB_IPS, [], False), None),
        ("from", None, (WEB_IPS, [], False)),
        ("both", (DB_IPS, [], False), (WEB_IPS, [], False)),
    ],
)
def test_shaping_direction_table(direction: str, web: Any, db: Any) -> None:
    by_side = shaping_by_side(shaping(direction=direction))
    assert active(by_side[("default/web-0", MAIN)]) == web
    assert active(by_side[("default/db-0", TARGET)]) == db


def test_shaping_without_target_or_externals_is_unfiltered() -> None:
    by_side = shaping_by_side(shaping(target=False))
    assert active(by_side[("default/web-0", MAIN)]) == ([], [], True)


def test_shaping_externals_filter_the_selector_side() -> None:
    by_side = shaping_by_side(shaping(target=False, externalTargets=["1.2.3.4:80", "example.com"]))
    assert active(by_side[("default/web-1", MAIN)]) == ([], ["1.2.3.4:80", "example.com"], False)


def test_shaping_target_without_addresses_never_widens_to_everything() -> None:
    db = [pod("db-0", app="db")]
    by_side = shaping_by_side(shaping(), *WEB, *db)
    assert active(by_side[("default/web-0", MAIN)]) is None


def test_shaping_carries_devices_and_pod_ips() -> None:
    by_side = shaping_by_side(shaping(direction="both", device="eth1@if7", targetDevice="veth9"))
    assert by_side[("default/web-0", MAIN)].device == "eth1"
    assert by_side[("default/db-1", TARGET)].device == "veth9"
    assert by_side[("default/db-1", TARGET)].pod_ip == "10.0.1.2"


def test_every_netem_block_is_merged_whatever_the_action() -> None:
    o = shaping(
        action="loss",
        target=False,
        loss={"loss": "25", "correlation": "50"},
        delay={
            "latency": "1.5ms",
            "jitter": "1ms",
            "correlation": "10",
            "reorder": {"reorder": "5", "correlation": "1", "gap": 0},
        },
        duplicate={"duplicate": "2"},
        corrupt={"corrupt": "0.5", "correlation": "3"},
        rate={"rate": "1mbit"},
        bandwidth={"rate": "1mbps", "limit": 10, "buffer": 10},
    )
    f = shaping_by_side(o)[("default/web-0", MAIN)]
    assert f.tbf is None and f.action == "loss"
    assert f.netem == m.NetemParams(
        latency_ns=1_500_000,
        jitter_ns=1_000_000,
        delay_correlation=10,
        reorder=5,
        reorder_correlation=1,
        gap=1,
        loss=25,
        loss_correlation=50,
        duplicate=2,
        corrupt=0.5,
        corrupt_correlation=3,
        rate=125_000,
    )


def test_chaos_mesh_netem_rules_kept() -> None:
    # correlation without jitter and reordering without latency are dropped, as Chaos Mesh does
    o = shaping(
        action="netem",
        target=False,
        delay={"latency": "0ms", "correlation": "50", "reorder": {"reorder": "10", "gap": 2}},
    )
    assert shaping_by_side(o)[("default/web-0", MAIN)].netem == m.NetemParams()


def test_bandwidth_is_a_tbf_only() -> None:
    o = shaping(
        action="bandwidth",
        target=False,
        bandwidth={"rate": "1mbit", "limit": 20000, "buffer": 10000, "peakrate": 250000, "minburst": 1600},
    )
    f = shaping_by_side(o)[("default/web-0", MAIN)]
    assert f.netem is None
    assert f.tbf == m.TbfParams(rate=125_000, limit=20_000, buffer=10_000, peakrate=250_000, minburst=1_600)


def test_bandwidth_peakrate_needs_minburst() -> None:
    o = shaping(
        action="bandwidth", target=False, bandwidth={"rate": "1kbps", "limit": 1, "buffer": 1, "peakrate": 5000}
    )
    assert shaping_by_side(o)[("default/web-0", MAIN)].tbf == m.TbfParams(rate=1024, limit=1, buffer=1)


@pytest.mark.parametrize(
    ("text", "bandwidth", "tc"),
    [
        ("1bps", 1, 1),
        ("1kbps", 1024, 1000),
        ("2mbps", 2 * 1024**2, 2_000_000),
        ("1gbps", 1024**3, 10**9),
        ("8bit", 1, 1),
        ("1kbit", 125, 125),
        ("1mbit", 125_000, 125_000),
        ("1GBIT", 125_000_000, 125_000_000),
        ("1tbit", 125 * 10**9, 125 * 10**9),
    ],
)
def test_rate_units(text: str, bandwidth: int, tc: int) -> None:
    assert plan.bandwidth_rate(text) == bandwidth
    assert plan.tc_rate(text) == tc


@pytest.mark.parametrize("text", ["", "1", "mbit", "1xbit", "1.5mbit", "-1bit"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError):
        plan.bandwidth_rate(text)


@pytest.mark.parametrize(
    ("offset", "clocks", "offset_ns", "mask"),
    [
        ("-1h", [], -3600 * 10**9, 0b1),  # CLOCK_REALTIME by default, as Chaos Mesh's webhook
        ("1m30.5s", ["CLOCK_REALTIME", "CLOCK_MONOTONIC"], 90_500_000_000, 0b11),
        ("-150ms", ["CLOCK_BOOTTIME", "CLOCK_TAI"], -150_000_000, (1 << 7) | (1 << 11)),
        ("+2us", ["CLOCK_MONOTONIC_COARSE"], 2_000, 1 << 6),
    ],
)
def test_timechaos_fault_per_container(offset: str, clocks: list[str], offset_ns: int, mask: int) -> None:
    spec: dict[str, Any] = {
        "selector": {"labelSelectors": {"app": "side"}},
        "containerNames": ["app", "log"],
        "timeOffset": offset,
    }
    if clocks:
        spec["clockIds"] = clocks
    o = obj("TimeChaos", **spec)
    chosen = select(o)
    assert [s.record_id for s in chosen] == ["default/side-0/app", "default/side-0/log"]
    assert [plan.fault_for(o, s, chosen) for s in chosen] == [
        m.TimeSkew(offset_ns=offset_ns, clock_mask=mask, container_names=[c]) for c in ("app", "log")
    ]


@pytest.mark.parametrize(
    ("names", "records"),
    [
        ([], ["default/side-0/app", "default/side-0/proxy", "default/side-0/log"]),  # absent: every container
        (["proxy"], ["default/side-0/proxy"]),
    ],
)
def test_golangchaos_fault_per_container(names: list[str], records: list[str]) -> None:
    spec: dict[str, Any] = {"selector": {"labelSelectors": {"app": "side"}}, "duration": "30s"}
    if names:
        spec["containerName"] = names
    o = obj("GolangChaos", **spec)
    chosen = select(o)
    assert [s.record_id for s in chosen] == records
    assert [plan.fault_for(o, s, chosen) for s in chosen] == [
        m.GoSqlError(container_names=[r.rsplit("/", 1)[1]]) for r in records
    ]
