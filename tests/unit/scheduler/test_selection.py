"""Selection: every PodSelectorSpec field, namespace scope and filter, every mode, container targets."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaosbus.common.crd.selectors import (
    FIELD_SELECTOR_KEYS,
    MODES,
    LabelSelectorRequirement,
    PodSelectorSpec,
)
from chaosbus.common.messages import ContainerRef, TargetNamespace, TargetNode, TargetPod
from chaosbus.scheduler import selection
from chaosbus.scheduler.selection import (
    SelectionConfig,
    SelectionError,
    World,
    apply_mode,
    container_record_id,
    container_targets,
    match_pods,
    pod_record_id,
    select_pods,
)

ALL_NS = ["default", "prod", "infra"]


def pod(ns: str, name: str, **kw: Any) -> TargetPod:
    return TargetPod(uid=f"uid-{ns}-{name}", namespace=ns, name=name, **kw)


def make_world(
    *pods: TargetPod, namespaces: tuple[TargetNamespace, ...] = (), nodes: tuple[TargetNode, ...] = ()
) -> World:
    return World(
        pods={p.key: p for p in pods},
        namespaces={n.name: n for n in namespaces},
        nodes={n.name: n for n in nodes},
    )


ENABLED = {"chaos-mesh.org/inject": "enabled"}
WORLD = make_world(
    pod(
        "default",
        "web-0",
        labels={"app": "web", "tier": "front"},
        node="n1",
        phase="Running",
        pod_ip="10.0.0.1",
        annotations={"owner": "team-a"},
    ),
    pod(
        "default",
        "web-1",
        labels={"app": "web", "tier": "back"},
        node="n2",
        phase="Pending",
        restart_policy="Never",
        nominated_node="n3",
    ),
    pod(
        "default",
        "db-0",
        labels={"app": "db", "env": ""},
        node="n1",
        phase="Running",
        scheduler_name="custom",
        service_account="db",
        annotations={"owner": "team-b"},
    ),
    pod("prod", "web-0", labels={"app": "web"}, node="n2", phase="Failed"),
    pod("infra", "dns-0", labels={"k8s-app": "dns"}, node="n3", phase="Succeeded"),
    pod("default", "dying", labels={"app": "web"}, node="n1", phase="Running", deleting=True),
    pod("default", "unscheduled", labels={"app": "batch"}, phase="Pending"),
    namespaces=(
        TargetNamespace(name="default", annotations=ENABLED),
        TargetNamespace(name="prod", annotations={"chaos-mesh.org/inject": "disabled"}),
        TargetNamespace(name="infra"),
    ),
    nodes=(
        TargetNode(name="n1", labels={"zone": "a", "role": "worker"}),
        TargetNode(name="n2", labels={"zone": "b", "role": "worker"}),
        TargetNode(name="n3", labels={"zone": "a", "role": "infra"}),
    ),
)
CLUSTER = SelectionConfig()


def keys(pods: list[TargetPod]) -> list[str]:
    return [p.key for p in pods]


def match(config: SelectionConfig = CLUSTER, world: World = WORLD, **fields: Any) -> list[str]:
    fields.setdefault("namespaces", ALL_NS)
    return keys(match_pods(PodSelectorSpec(**fields), world, config))


def error_of(config: SelectionConfig = CLUSTER, **fields: Any) -> str:
    fields.setdefault("namespaces", ALL_NS)
    with pytest.raises(SelectionError) as info:
        match_pods(PodSelectorSpec(**fields), WORLD, config)
    return str(info.value)


# --- namespaces, ordering, deleting ----------------------------------------------------------


@pytest.mark.parametrize(
    ("namespaces", "expected"),
    [
        (["prod"], ["prod/web-0"]),
        (["infra", "prod"], ["infra/dns-0", "prod/web-0"]),
        (["prod", "prod"], ["prod/web-0"]),
        (["absent"], []),
        ([], ["default/db-0", "default/unscheduled", "default/web-0", "default/web-1", "infra/dns-0", "prod/web-0"]),
    ],
)
def test_namespaces_select_pods_in_the_listed_namespaces(namespaces: list[str], expected: list[str]) -> None:
    assert match(namespaces=namespaces) == expected


def test_result_is_sorted_by_namespace_then_name() -> None:
    shuffled = make_world(pod("b", "a"), pod("a", "z"), pod("a", "b"))
    assert keys(match_pods(PodSelectorSpec(), shuffled, CLUSTER)) == ["a/b", "a/z", "b/a"]


def test_deleting_pods_are_never_selected() -> None:
    assert "default/dying" not in match(label_selectors={"app": "web"})


# --- labelSelectors and expressionSelectors --------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"app": "web"}, ["default/web-0", "default/web-1", "prod/web-0"]),
        ({"app": "web", "tier": "front"}, ["default/web-0"]),
        ({"app": "web", "tier": "nope"}, []),
        ({"tier": "front", "absent": "x"}, []),
        ({"env": ""}, ["default/db-0"]),  # an empty value still needs the key
    ],
)
def test_label_selectors_are_equality_requirements(labels: dict[str, str], expected: list[str]) -> None:
    assert match(label_selectors=labels) == expected


@pytest.mark.parametrize(
    ("operator", "values", "expected"),
    [
        ("In", ["front", "back"], ["default/web-0", "default/web-1"]),
        ("In", ["front"], ["default/web-0"]),
        (
            "NotIn",
            ["front"],
            ["default/db-0", "default/unscheduled", "default/web-1", "infra/dns-0", "prod/web-0"],
        ),  # pods without `tier` match NotIn
        ("Exists", [], ["default/web-0", "default/web-1"]),
        ("DoesNotExist", [], ["default/db-0", "default/unscheduled", "infra/dns-0", "prod/web-0"]),
    ],
)
def test_expression_operators_follow_kubernetes(operator: str, values: list[str], expected: list[str]) -> None:
    req = LabelSelectorRequirement(key="tier", operator=operator, values=values)
    assert match(expression_selectors=[req]) == expected


def test_expressions_and_labels_are_anded() -> None:
    req = LabelSelectorRequirement(key="tier", operator="NotIn", values=["front"])
    got = match(label_selectors={"app": "web"}, expression_selectors=[req])
    assert got == ["default/web-1", "prod/web-0"]


def test_several_expressions_are_anded() -> None:
    reqs = [
        LabelSelectorRequirement(key="app", operator="In", values=["web"]),
        LabelSelectorRequirement(key="tier", operator="Exists"),
    ]
    assert match(expression_selectors=reqs) == ["default/web-0", "default/web-1"]


@pytest.mark.parametrize(
    ("operator", "values", "message"),
    [
        ("Gt", ["1"], "spec.selector.expressionSelectors[1].operator: unsupported operator 'Gt'"),
        ("in", ["web"], "spec.selector.expressionSelectors[1].operator: unsupported operator 'in'"),
        ("In", [], "spec.selector.expressionSelectors[1].values: operator In needs at least one value"),
        ("NotIn", [], "spec.selector.expressionSelectors[1].values: operator NotIn needs at least one value"),
        ("Exists", ["x"], "spec.selector.expressionSelectors[1].values: operator Exists takes no values"),
        ("DoesNotExist", ["x"], "spec.selector.expressionSelectors[1].values: operator DoesNotExist takes no"),
    ],
)
def test_invalid_expressions_name_the_field(operator: str, values: list[str], message: str) -> None:
    reqs = [
        LabelSelectorRequirement(key="app", operator="Exists"),
        LabelSelectorRequirement(key="app", operator=operator, values=values),
    ]
    assert error_of(expression_selectors=reqs).startswith(message)


# --- annotationSelectors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"owner": "team-a"}, ["default/web-0"]),
        ({"owner": "team-c"}, []),
        ({"absent": ""}, []),
    ],
)
def test_annotation_selectors_are_equality_requirements(annotations: dict[str, str], expected: list[str]) -> None:
    assert match(annotation_selectors=annotations) == expected


# --- fieldSelectors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("metadata.name", "web-0", ["default/web-0", "prod/web-0"]),
        ("metadata.namespace", "prod", ["prod/web-0"]),
        ("spec.nodeName", "n3", ["infra/dns-0"]),
        ("spec.nodeName", "", ["default/unscheduled"]),
        ("spec.restartPolicy", "Never", ["default/web-1"]),
        ("spec.schedulerName", "custom", ["default/db-0"]),
        ("spec.serviceAccountName", "db", ["default/db-0"]),
        ("status.phase", "Failed", ["prod/web-0"]),
        ("status.podIP", "10.0.0.1", ["default/web-0"]),
        ("status.nominatedNodeName", "n3", ["default/web-1"]),
    ],
)
def test_each_field_selector_key_maps_to_its_pod_field(key: str, value: str, expected: list[str]) -> None:
    assert match(field_selectors={key: value}) == expected


def test_every_supported_field_key_is_covered() -> None:
    for key in FIELD_SELECTOR_KEYS:
        assert match(field_selectors={key: "\0never"}) == []


def test_field_selectors_are_anded() -> None:
    assert match(field_selectors={"metadata.name": "web-0", "spec.nodeName": "n2"}) == ["prod/web-0"]


def test_unsupported_field_selector_is_an_error() -> None:
    assert error_of(field_selectors={"spec.hostNetwork": "true"}).startswith(
        "spec.selector.fieldSelectors: unsupported field 'spec.hostNetwork'"
    )


# --- podPhaseSelectors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        (["Running"], ["default/db-0", "default/web-0"]),
        (["Running", "Failed"], ["default/db-0", "default/web-0", "prod/web-0"]),
        (["Running,Failed"], ["default/db-0", "default/web-0", "prod/web-0"]),
        (["!Running"], ["default/unscheduled", "default/web-1", "infra/dns-0", "prod/web-0"]),
        (["!Running", "!Pending"], ["infra/dns-0", "prod/web-0"]),
        (["Running", "Pending", "!Pending"], ["default/db-0", "default/web-0"]),  # include AND not exclude
        (["Running", "!Running"], []),
        (["Unknown"], []),
        ([" ! Failed "], ["default/db-0", "default/unscheduled", "default/web-0", "default/web-1", "infra/dns-0"]),
    ],
)
def test_phase_selectors_include_any_and_exclude_all(phases: list[str], expected: list[str]) -> None:
    assert match(pod_phase_selectors=phases) == expected


@pytest.mark.parametrize("entry", ["running", "Running=true", "phase in (Running)", "!", "", "Running,"])
def test_invalid_phase_selector_is_an_error(entry: str) -> None:
    message = error_of(pod_phase_selectors=["Running", entry])
    assert message.startswith("spec.selector.podPhaseSelectors[1]: unsupported phase selector")


# --- nodes and nodeSelectors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"nodes": ["n3"]}, ["infra/dns-0"]),
        ({"nodes": ["n1", "n3"]}, ["default/db-0", "default/web-0", "infra/dns-0"]),
        ({"node_selectors": {"zone": "b"}}, ["default/web-1", "prod/web-0"]),
        ({"node_selectors": {"zone": "a", "role": "worker"}}, ["default/db-0", "default/web-0"]),
        ({"nodes": ["n3"], "node_selectors": {"zone": "b"}}, ["default/web-1", "infra/dns-0", "prod/web-0"]),  # union
        ({"node_selectors": {"zone": "mars"}}, []),  # an empty union selects nothing
    ],
)
def test_nodes_and_node_selectors_are_united(fields: dict[str, Any], expected: list[str]) -> None:
    assert match(**fields) == expected


def test_node_filter_is_anded_with_labels() -> None:
    assert match(nodes=["n1"], label_selectors={"app": "web"}) == ["default/web-0"]


def test_a_named_node_that_does_not_exist_is_an_error() -> None:
    message = error_of(nodes=["n1", "ghost"], node_selectors={"zone": "a"})
    assert message == "spec.selector.nodes: node 'ghost' does not exist"


def test_error_paths_use_the_given_prefix() -> None:
    with pytest.raises(SelectionError, match=r"^spec\.target\.selector\.nodes: "):
        match_pods(PodSelectorSpec(nodes=["ghost"]), WORLD, CLUSTER, path="spec.target.selector")


# --- the pods map ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ({"prod": ["web-0"], "default": ["web-1", "web-0"]}, ["default/web-0", "default/web-1", "prod/web-0"]),
        ({"default": ["web-0", "ghost"], "nowhere": ["x"]}, ["default/web-0"]),  # missing pods skipped
        ({"default": ["ghost"]}, []),
        ({"default": ["web-0", "web-0"]}, ["default/web-0"]),
        ({"default": ["dying", "db-0"]}, ["default/db-0"]),
    ],
)
def test_pods_map_lists_pods_explicitly(pods: dict[str, list[str]], expected: list[str]) -> None:
    assert match(pods=pods) == expected


def test_pods_map_overrides_every_other_field() -> None:
    assert match(
        pods={"infra": ["dns-0"]},
        namespaces=["prod"],
        label_selectors={"app": "web"},
        nodes=["ghost"],
        field_selectors={"bogus": "x"},
        pod_phase_selectors=["Running"],
        expression_selectors=[LabelSelectorRequirement(key="a", operator="Gt")],
    ) == ["infra/dns-0"]


# --- namespace scope -------------------------------------------------------------------------

SCOPED = SelectionConfig(cluster_scoped=False, target_namespace="default")


@pytest.mark.parametrize("namespaces", [[], ["default"], ["default", "default"]])
def test_namespace_scoped_selects_only_the_target_namespace(namespaces: list[str]) -> None:
    assert match(SCOPED, namespaces=namespaces, label_selectors={"app": "web"}) == ["default/web-0", "default/web-1"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"namespaces": ["prod"]}, "spec.selector.namespaces: namespace 'prod' is out of scope"),
        ({"namespaces": ["default", "prod"]}, "spec.selector.namespaces: at most one namespace"),
        ({"pods": {"default": ["web-0"], "prod": ["web-0"]}}, "spec.selector.pods: namespace 'prod' is out"),
    ],
)
def test_namespace_scoped_rejects_other_namespaces(fields: dict[str, Any], message: str) -> None:
    assert error_of(SCOPED, **fields).startswith(message)


def test_namespace_scoped_accepts_pods_in_the_target_namespace() -> None:
    assert match(SCOPED, pods={"default": ["db-0"]}) == ["default/db-0"]


# --- namespace filter ------------------------------------------------------------------------

FILTERED = SelectionConfig(enable_filter_namespace=True)


@pytest.mark.parametrize("namespaces", [ALL_NS, []])  # [] too: Chaos Mesh skipped the filter then
def test_namespace_filter_keeps_only_annotated_namespaces(namespaces: list[str]) -> None:
    assert match(FILTERED, namespaces=namespaces, label_selectors={"app": "web"}) == ["default/web-0", "default/web-1"]


def test_namespace_filter_treats_unknown_namespace_as_not_enabled() -> None:
    world = make_world(pod("ghost-ns", "p"))
    assert keys(match_pods(PodSelectorSpec(namespaces=["ghost-ns"]), world, FILTERED)) == []


def test_namespace_filter_applies_to_the_pods_map() -> None:
    assert match(FILTERED, pods={"default": ["db-0"], "prod": ["web-0"]}) == ["default/db-0"]


def test_namespace_filter_is_off_by_default() -> None:
    assert match(namespaces=["prod"]) == ["prod/web-0"]


# --- modes -----------------------------------------------------------------------------------

ITEMS = list(range(10))


def choose(mode: str, value: str = "", items: list[int] = ITEMS, seed: int = 0) -> list[int]:
    return apply_mode(items, mode, value, random.Random(seed))


def test_one_picks_a_single_item() -> None:
    assert [len(choose("one", seed=s)) for s in range(20)] == [1] * 20


def test_one_uses_the_rng() -> None:
    assert len({choose("one", seed=s)[0] for s in range(50)}) > 1


def test_all_returns_every_item_in_order() -> None:
    assert choose("all") == ITEMS


@pytest.mark.parametrize("mode", ["one", "all"])
def test_value_is_ignored_by_one_and_all(mode: str) -> None:
    assert choose(mode, "nonsense")


@pytest.mark.parametrize(
    ("count", "value", "expected"),
    [
        (10, "3", 3),
        (10, "10", 10),
        (3, "10", 3),
        (1, "1", 1),
        (5, "+2", 2),
        (5, "007", 5),
    ],
)
def test_fixed_selects_min_of_n_and_count(count: int, value: str, expected: int) -> None:
    assert len(choose("fixed", value, items=list(range(count)))) == expected


@pytest.mark.parametrize(
    ("count", "percent", "expected"),
    [
        (10, 10, 1),
        (10, 15, 2),
        (10, 100, 10),
        (3, 50, 2),
        (3, 34, 2),
        (3, 33, 1),
        (1, 1, 1),
        (7, 1, 1),
        (200, 99, 198),
        (1000, 1, 10),
    ],
)
def test_fixed_percent_rounds_up(count: int, percent: int, expected: int) -> None:
    assert len(choose("fixed-percent", str(percent), items=list(range(count)))) == expected


def test_random_max_percent_stays_within_bounds_and_uses_the_whole_range() -> None:
    sizes, failures = set(), 0
    for seed in range(400):
        try:
            sizes.add(len(choose("random-max-percent", "50", seed=seed)))
        except SelectionError:
            failures += 1
    assert sizes == {1, 2, 3, 4, 5}  # ceil(10 * P'/100) for P' in 1..50
    assert 0 < failures < 40  # P' == 0 has probability 1/51


def test_random_max_percent_zero_draw_is_an_explained_error() -> None:
    seed = next(s for s in range(200) if random.Random(s).randint(0, 5) == 0)
    with pytest.raises(SelectionError) as info:
        choose("random-max-percent", "5", seed=seed)
    message = str(info.value)
    assert message.startswith("spec: no pod is selected: mode random-max-percent drew 0%")
    assert "probability 1/6" in message and "fixed-percent" in message


def test_random_max_percent_100_on_one_item_always_selects_it_or_fails() -> None:
    outcomes = set()
    for seed in range(300):
        try:
            outcomes.add(tuple(choose("random-max-percent", "100", items=[7], seed=seed)))
        except SelectionError:
            outcomes.add(())
    assert outcomes == {(7,), ()}


@pytest.mark.parametrize(
    ("mode", "value"),
    [
        ("fixed", "0"),
        ("fixed", "-1"),
        ("fixed", "abc"),
        ("fixed", ""),
        ("fixed", " 2"),
        ("fixed", "1.5"),
        ("fixed", "1_0"),
        ("fixed-percent", "0"),
        ("fixed-percent", "101"),
        ("fixed-percent", "-5"),
        ("fixed-percent", "x"),
        ("fixed-percent", ""),
        ("random-max-percent", "0"),
        ("random-max-percent", "101"),
        ("random-max-percent", "50%"),
    ],
)
def test_invalid_values_name_spec_value(mode: str, value: str) -> None:
    with pytest.raises(SelectionError, match=rf"^spec\.value: mode {mode} needs an integer"):
        choose(mode, value)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("", "spec.mode: required"),
        ("random", "spec.mode: got 'random'"),
        ("All", "spec.mode: got 'All'"),
    ],
)
def test_invalid_mode_names_spec_mode(mode: str, message: str) -> None:
    with pytest.raises(SelectionError) as info:
        choose(mode, "1")
    assert str(info.value).startswith(message)


def test_mode_errors_use_the_given_path() -> None:
    with pytest.raises(SelectionError, match=r"^spec\.target\.value: "):
        apply_mode(ITEMS, "fixed", "0", random.Random(0), path="spec.target")


def test_no_items_is_no_pod_selected() -> None:
    with pytest.raises(SelectionError, match="^spec: no pod is selected"):
        choose("all", items=[])


def test_same_seed_same_choice() -> None:
    assert choose("fixed", "4", seed=42) == choose("fixed", "4", seed=42)


@given(
    items=st.lists(st.integers(), unique=True, max_size=60),
    mode=st.sampled_from(MODES),
    number=st.integers(min_value=1, max_value=150),
    seed=st.integers(0, 2**32),
)
def test_mode_never_exceeds_count_nor_duplicates(items: list[int], mode: str, number: int, seed: int) -> None:
    try:
        chosen = apply_mode(items, mode, str(number), random.Random(seed))
    except SelectionError:
        return  # empty input, a percentage over 100, or a 0% random-max-percent draw
    assert 0 < len(chosen) <= len(items)
    assert len(set(chosen)) == len(chosen)
    assert [i for i in items if i in set(chosen)] == chosen  # a subsequence, in input order


@given(count=st.integers(1, 500), percent=st.integers(1, 100), seed=st.integers(0, 2**32))
def test_fixed_percent_count_is_ceil_of_share(count: int, percent: int, seed: int) -> None:
    chosen = apply_mode(list(range(count)), "fixed-percent", str(percent), random.Random(seed))
    assert len(chosen) == math.ceil(count * percent / 100)


@given(count=st.integers(1, 300), n=st.integers(1, 400), seed=st.integers(0, 2**32))
def test_fixed_count_is_min_of_n_and_count(count: int, n: int, seed: int) -> None:
    assert len(apply_mode(list(range(count)), "fixed", str(n), random.Random(seed))) == min(n, count)


# --- select_pods -----------------------------------------------------------------------------


def select(selector: PodSelectorSpec, mode: str = "all", value: str = "") -> list[str]:
    return keys(select_pods(selector, mode, value, WORLD, CLUSTER, random.Random(1)))


def test_select_pods_matches_then_applies_the_mode() -> None:
    web = PodSelectorSpec(namespaces=ALL_NS, label_selectors={"app": "web"})
    assert select(web) == ["default/web-0", "default/web-1", "prod/web-0"]
    assert len(select(web, "fixed", "2")) == 2


def test_select_pods_empty_match_is_no_pod_selected() -> None:
    with pytest.raises(SelectionError, match=r"^spec\.selector: no pod is selected"):
        select(PodSelectorSpec(namespaces=["absent"]))


def test_select_pods_reports_a_bad_value_before_an_empty_match() -> None:
    with pytest.raises(SelectionError, match=r"^spec\.value: "):
        select(PodSelectorSpec(namespaces=["absent"]), "fixed", "0")


def test_field_getters_cover_exactly_the_supported_keys() -> None:
    assert set(selection._FIELD_GETTERS) == set(FIELD_SELECTOR_KEYS)


# --- container targets and record ids --------------------------------------------------------

MULTI = pod("ns", "p", containers=[ContainerRef(name="app"), ContainerRef(name="sidecar"), ContainerRef(name="proxy")])
BARE = pod("ns", "bare")


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([], ["ns/p/app"]),
        (["proxy", "app"], ["ns/p/app", "ns/p/proxy"]),  # pod's container order
        (["sidecar", "ghost"], ["ns/p/sidecar"]),
        (["sidecar", "sidecar"], ["ns/p/sidecar"]),
        (["ghost"], []),
    ],
)
def test_container_names_pick_existing_containers(names: list[str], expected: list[str]) -> None:
    assert [container_record_id(p, c) for p, c in container_targets([MULTI, BARE], names)] == expected


def test_container_targets_keep_pod_order() -> None:
    other = pod("a", "q", containers=[ContainerRef(name="app")])
    assert [p.key for p, _ in container_targets([MULTI, other], ["app"])] == ["ns/p", "a/q"]


def test_record_ids() -> None:
    assert pod_record_id(MULTI) == "ns/p"
    assert container_record_id(MULTI, MULTI.containers[1]) == "ns/p/sidecar"
