"""CRD decoding: Chaos Mesh's example shapes decode with the webhook's defaults applied; bad input
raises InvalidObject with messages that name the field path (and the document, for streams).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from chaosbus.common.crd import (
    API_VERSION,
    ChaosObject,
    InvalidObject,
    decode_documents,
    decode_object,
    encode_object,
    kinds,
)
from chaosbus.common.crd.helloworld import HelloWorldChaosSpec
from chaosbus.common.crd.kinds import CHAOS_KINDS
from chaosbus.common.crd.networkchaos import NetworkChaosSpec, parse_external
from chaosbus.common.crd.podchaos import PodChaosSpec
from chaosbus.common.crd.selectors import MODES

# --- Chaos Mesh's examples/ (shapes as published), one YAML document each ------------------------

POD_KILL = """
apiVersion: chaos-mesh.org/v1alpha1
kind: PodChaos
metadata:
  name: pod-kill-example
  namespace: chaos-testing
spec:
  action: pod-kill
  mode: one
  selector:
    labelSelectors:
      'app.kubernetes.io/component': 'tikv'
"""

POD_FAILURE = """
apiVersion: chaos-mesh.org/v1alpha1
kind: PodChaos
metadata:
  name: pod-failure-example
  namespace: chaos-testing
spec:
  action: pod-failure
  mode: one
  duration: '30s'
  selector:
    labelSelectors:
      'app.kubernetes.io/component': 'tikv'
"""

CONTAINER_KILL = """
apiVersion: chaos-mesh.org/v1alpha1
kind: PodChaos
metadata:
  name: container-kill-example
  namespace: chaos-testing
spec:
  action: container-kill
  mode: one
  containerNames: ['prometheus']
  selector:
    labelSelectors:
      'app.kubernetes.io/component': 'monitor'
"""

PARTITION = """
apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: network-partition-example
  namespace: chaos-testing
spec:
  action: partition
  mode: all
  selector:
    namespaces: [tidb-cluster-demo]
    labelSelectors:
      'app.kubernetes.io/component': 'tikv'
  direction: to
  target:
    selector:
      namespaces: [tidb-cluster-demo]
      labelSelectors:
        'app.kubernetes.io/component': 'tikv'
    mode: one
  duration: '10s'
"""

PARTITION_NO_TARGET = """
apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: partition-all
  namespace: chaos-testing
spec:
  action: partition
  mode: all
  selector:
    labelSelectors:
      app: web
"""

PARTITION_EXTERNAL = """
apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: network-partition-with-external-targets-example
  namespace: chaos-testing
spec:
  action: partition
  mode: all
  selector:
    namespaces: [default]
  direction: to
  externalTargets:
    - 'www.example.com'
    - '10.0.0.0/8'
    - '1.2.3.4:8080'
  duration: '10s'
"""

DELAY = """
apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: network-delay-example
  namespace: chaos-testing
spec:
  action: delay
  mode: one
  selector:
    namespaces: [tidb-cluster-demo]
    labelSelectors:
      'app.kubernetes.io/component': 'tidb'
  delay:
    latency: '90ms'
    correlation: '25'
    jitter: '90ms'
  duration: '10s'
"""

DELAY_WITH_TARGET = """
apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: network-delay-with-target-example
  namespace: chaos-testing
spec:
  action: delay
  mode: all
  selector:
    namespaces: [tidb-cluster-demo]
    labelSelectors:
      'app.kubernetes.io/component': 'tidb'
  delay:
    latency: '90ms'
    correlation: '25'
    jitter: '90ms'
    reorder:
      reorder: '25'
      correlation: '50'
      gap: 5
  direction: both
  target:
    selector:
      namespaces: [tidb-cluster-demo]
      labelSelectors:
        'app.kubernetes.io/component': 'tikv'
    mode: all
  duration: '10s'
"""

DELAY_EXTERNAL = """
apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: network-delay-with-external-target-example
  namespace: chaos-testing
spec:
  action: delay
  mode: all
  selector:
    namespaces: [default]
  delay:
    latency: '100ms'
  direction: to
  externalTargets: ['www.example.com']
"""

LOSS = """
apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: network-loss-example
  namespace: chaos-testing
spec:
  action: loss
  mode: one
  selector:
    labelSelectors:
      'app.kubernetes.io/component': 'tikv'
  loss:
    loss: '25'
    correlation: '25'
  duration: '10s'
"""

DUPLICATE = """
apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: network-duplicate-example
  namespace: chaos-testing
spec:
  action: duplicate
  mode: one
  selector:
    labelSelectors:
      'app.kubernetes.io/component': 'tikv'
  duplicate:
    duplicate: '40'
    correlation: '25'
  duration: '10s'
"""

CORRUPT = """
apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: network-corrupt-example
  namespace: chaos-testing
spec:
  action: corrupt
  mode: one
  selector:
    labelSelectors:
      'app.kubernetes.io/component': 'tikv'
  corrupt:
    corrupt: '40'
    correlation: '25'
  duration: '10s'
"""

BANDWIDTH = """
apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: network-bandwidth-example
  namespace: chaos-testing
spec:
  action: bandwidth
  mode: all
  selector:
    labelSelectors:
      'app.kubernetes.io/component': 'tikv'
  bandwidth:
    rate: '1mbps'
    limit: 20971520
    buffer: 10000
    peakrate: 2000000
    minburst: 1500
  duration: '10s'
"""

NETEM = """
apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: network-netem-example
  namespace: chaos-testing
spec:
  action: netem
  mode: one
  selector:
    labelSelectors:
      'app.kubernetes.io/component': 'tidb'
  delay:
    latency: '90ms'
    correlation: '25'
    jitter: '90ms'
  loss:
    loss: '25'
    correlation: '25'
  duplicate:
    duplicate: '40'
    correlation: '25'
  corrupt:
    corrupt: '40'
    correlation: '25'
  rate:
    rate: '10mbps'
  duration: '10s'
"""

HELLO = """
apiVersion: chaos-mesh.org/v1alpha1
kind: HelloWorldChaos
metadata:
  name: hello-world
  namespace: chaos-mesh
spec:
  selector:
    labelSelectors:
      app: hello-world
  mode: one
  duration: 1h
"""

EXAMPLES = {
    "pod-kill": POD_KILL,
    "pod-failure": POD_FAILURE,
    "container-kill": CONTAINER_KILL,
    "partition": PARTITION,
    "partition-no-target": PARTITION_NO_TARGET,
    "partition-external": PARTITION_EXTERNAL,
    "delay": DELAY,
    "delay-with-target": DELAY_WITH_TARGET,
    "delay-external": DELAY_EXTERNAL,
    "loss": LOSS,
    "duplicate": DUPLICATE,
    "corrupt": CORRUPT,
    "bandwidth": BANDWIDTH,
    "netem": NETEM,
    "hello-world": HELLO,
}


def doc_of(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def decode(text: str) -> ChaosObject:
    return decode_object(doc_of(text))


def with_spec(text: str, **changes: Any) -> dict[str, Any]:
    """The example with spec fields replaced (value None deletes the field)."""
    doc = copy.deepcopy(doc_of(text))
    for key, value in changes.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    return doc


def errors_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidObject) as info:
        decode_object(doc)
    return info.value.errors


# --- every example decodes unchanged, with defaults ----------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_decodes_to_its_kind_and_name(name: str) -> None:
    doc = doc_of(EXAMPLES[name])
    obj = decode_object(doc)
    assert (obj.api_version, obj.kind, obj.metadata.name, obj.metadata.namespace) == (
        API_VERSION,
        doc["kind"],
        doc["metadata"]["name"],
        doc["metadata"]["namespace"],
    )
    assert obj.key == f"{doc['kind']}/{doc['metadata']['namespace']}/{doc['metadata']['name']}"


@pytest.mark.parametrize(
    ("name", "spec_type"),
    [
        ("pod-kill", PodChaosSpec),
        ("pod-failure", PodChaosSpec),
        ("container-kill", PodChaosSpec),
        ("partition", NetworkChaosSpec),
        ("delay", NetworkChaosSpec),
        ("hello-world", HelloWorldChaosSpec),
    ],
)
def test_example_spec_has_the_kinds_struct(name: str, spec_type: type) -> None:
    assert type(decode(EXAMPLES[name]).spec) is spec_type


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_keeps_every_field_it_spelled(name: str) -> None:
    """Decoding then encoding gives back every field the user wrote, with the same value."""
    doc = doc_of(EXAMPLES[name])
    spec = encode_object(decode_object(doc))["spec"]

    def contains(have: Any, want: Any, path: str) -> None:
        if isinstance(want, dict):
            for k, v in want.items():
                assert k in have, f"{path}.{k} lost"
                contains(have[k], v, f"{path}.{k}")
        else:
            assert have == want, path

    # `direction: to` is the default and is omitted when encoding, as Kubernetes omits defaults.
    want = {k: v for k, v in doc["spec"].items() if not (k == "direction" and v == "to")}
    contains(spec, want, "spec")


@pytest.mark.parametrize(
    ("name", "action", "one_shot"),
    [
        ("pod-kill", "pod-kill", True),
        ("pod-failure", "pod-failure", False),
        ("container-kill", "container-kill", True),
    ],
)
def test_podchaos_action_and_one_shot(name: str, action: str, one_shot: bool) -> None:
    spec = decode(EXAMPLES[name]).spec
    assert isinstance(spec, PodChaosSpec)
    assert (spec.action, kinds.one_shot("PodChaos", spec)) == (action, one_shot)


@pytest.mark.parametrize("name", ["partition", "delay", "bandwidth", "netem", "hello-world"])
def test_duration_kinds_are_not_one_shot(name: str) -> None:
    obj = decode(EXAMPLES[name])
    assert kinds.one_shot(obj.kind, obj.spec) is False


@pytest.mark.parametrize(
    ("name", "seconds"),
    [
        ("pod-kill", None),
        ("pod-failure", 30.0),
        ("partition", 10.0),
        ("hello-world", 3600.0),
    ],
)
def test_duration_seconds(name: str, seconds: float | None) -> None:
    assert decode(EXAMPLES[name]).spec.duration_seconds() == seconds


def test_empty_duration_runs_until_deleted() -> None:
    assert decode_object(with_spec(POD_FAILURE, duration="")).spec.duration_seconds() is None


def test_container_kill_keeps_container_names() -> None:
    spec = decode(CONTAINER_KILL).spec
    assert isinstance(spec, PodChaosSpec)
    assert spec.container_names == ["prometheus"]


def test_grace_period_defaults_to_zero() -> None:
    spec = decode(POD_KILL).spec
    assert isinstance(spec, PodChaosSpec)
    assert spec.grace_period == 0


# --- defaults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pod-kill", "loss", "hello-world", "partition-no-target"])
def test_empty_selector_namespaces_default_to_the_objects_namespace(name: str) -> None:
    obj = decode(EXAMPLES[name])
    assert obj.spec.selector.namespaces == [obj.metadata.namespace]


def test_listed_namespaces_are_kept() -> None:
    assert decode(PARTITION).spec.selector.namespaces == ["tidb-cluster-demo"]


def test_target_selector_namespaces_default_to_the_objects_namespace() -> None:
    target = {"mode": "all", "selector": {"labelSelectors": {"app": "db"}}}
    spec = decode_object(with_spec(PARTITION_NO_TARGET, target=target)).spec
    assert isinstance(spec, NetworkChaosSpec) and spec.target is not None
    assert spec.target.selector.namespaces == ["chaos-testing"]


def test_explicit_pods_map_gets_no_namespace_default() -> None:
    spec = decode_object(with_spec(POD_KILL, selector={"pods": {"prod": ["web-0"]}})).spec
    assert spec.selector.namespaces == []


def test_missing_namespace_uses_default_namespace_argument() -> None:
    doc = doc_of(POD_KILL)
    del doc["metadata"]["namespace"]
    obj = decode_object(doc, default_namespace="team-a")
    assert (obj.metadata.namespace, obj.spec.selector.namespaces) == ("team-a", ["team-a"])


@pytest.mark.parametrize(("direction", "expected"), [(None, "to"), ("", "to"), ("both", "both")])
def test_direction_defaults_to_to(direction: str | None, expected: str) -> None:
    spec = decode_object(with_spec(PARTITION, direction=direction)).spec
    assert isinstance(spec, NetworkChaosSpec)
    assert spec.direction == expected


def test_delay_jitter_and_correlation_defaults() -> None:
    spec = decode_object(with_spec(DELAY, delay={"latency": "10ms"})).spec
    assert isinstance(spec, NetworkChaosSpec) and spec.delay is not None
    assert (spec.delay.jitter, spec.delay.correlation) == ("0ms", "0")


@pytest.mark.parametrize("block", ["loss", "duplicate", "corrupt"])
def test_percent_block_correlation_defaults_to_zero(block: str) -> None:
    spec = decode_object(with_spec(EXAMPLES[block], **{block: {block: "10"}})).spec
    assert getattr(spec, block).correlation == "0"


@pytest.mark.parametrize(("field", "attr"), [("device", "device"), ("targetDevice", "target_device")])
@pytest.mark.parametrize(("given", "expected"), [("eth0@if12", "eth0"), ("eth1", "eth1"), ("", "")])
def test_device_at_suffix_is_stripped(field: str, attr: str, given: str, expected: str) -> None:
    spec = decode_object(with_spec(PARTITION, **{field: given})).spec
    assert getattr(spec, attr) == expected


def test_external_targets_are_kept_as_written() -> None:
    spec = decode(PARTITION_EXTERNAL).spec
    assert isinstance(spec, NetworkChaosSpec)
    assert spec.external_targets == ["www.example.com", "10.0.0.0/8", "1.2.3.4:8080"]


def test_status_is_decoded_when_present() -> None:
    doc = doc_of(POD_FAILURE)
    doc["status"] = {
        "experiment": {
            "desiredPhase": "Run",
            "containerRecords": [
                {
                    "id": "ns/p",
                    "selectorKey": ".",
                    "phase": "Injected",
                    "injectedCount": 1,
                    "recoveredCount": 0,
                    "events": [],
                }
            ],
        }
    }
    obj = decode_object(doc)
    assert obj.status is not None and obj.status.experiment.container_records is not None
    assert [(r.id, r.phase) for r in obj.status.experiment.container_records] == [("ns/p", "Injected")]


# --- invalid input: messages name the field ------------------------------------------------------


def test_bad_mode_names_spec_mode_and_every_mode() -> None:
    assert errors_of(with_spec(POD_KILL, mode="sometimes")) == [
        "spec.mode: expected one of one, all, fixed, fixed-percent, random-max-percent"
    ]


def test_missing_mode_is_required() -> None:
    assert errors_of(with_spec(POD_KILL, mode=None)) == [f"spec.mode: required; expected one of {', '.join(MODES)}"]


@pytest.mark.parametrize(
    ("mode", "value"),
    [
        ("fixed", "0"),
        ("fixed", "-1"),
        ("fixed", "abc"),
        ("fixed", "1.5"),
        ("fixed", ""),
        ("fixed", " 2"),
        ("fixed-percent", "0"),
        ("fixed-percent", "101"),
        ("fixed-percent", "50%"),
        ("fixed-percent", ""),
        ("random-max-percent", "0"),
        ("random-max-percent", "101"),
        ("random-max-percent", "x"),
    ],
)
def test_bad_value_for_mode_names_spec_value(mode: str, value: str) -> None:
    errors = errors_of(with_spec(POD_KILL, mode=mode, value=value))
    assert len(errors) == 1
    assert errors[0].startswith(f"spec.value: mode {mode} needs")
    assert repr(value) in errors[0]


@pytest.mark.parametrize(
    ("mode", "value"),
    [
        ("one", "anything"),
        ("all", ""),
        ("fixed", "1"),
        ("fixed", "+3"),
        ("fixed", "1000"),
        ("fixed-percent", "1"),
        ("fixed-percent", "100"),
        ("random-max-percent", "100"),
    ],
)
def test_good_value_for_mode_decodes(mode: str, value: str) -> None:
    spec = decode_object(with_spec(POD_KILL, mode=mode, value=value)).spec
    assert (spec.mode, spec.value) == (mode, value)


def test_target_mode_and_value_are_checked_under_spec_target() -> None:
    target = {"mode": "fixed", "value": "0", "selector": {}}
    assert errors_of(with_spec(PARTITION, target=target)) == [
        "spec.target.value: mode fixed needs an integer greater than 0, got '0'"
    ]


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        ("-1s", "spec.duration: must not be negative, got '-1s'"),
        ("-1h30m", "spec.duration: must not be negative, got '-1h30m'"),
        ("1d", "spec.duration: invalid duration '1d'"),
        ("30", "spec.duration: invalid duration '30'"),
        ("s", "spec.duration: invalid duration 's'"),
        ("1h 30m", "spec.duration: invalid duration '1h 30m'"),
    ],
)
def test_bad_duration_names_spec_duration(duration: str, message: str) -> None:
    errors = errors_of(with_spec(POD_FAILURE, duration=duration))
    assert len(errors) == 1 and errors[0].startswith(message)


@pytest.mark.parametrize(
    ("spec_changes", "expected"),
    [
        ({"bogus": 1}, "spec.bogus: unknown field"),
        ({"selector": {"labelSelector": {"a": "b"}}}, "spec.selector.labelSelector: unknown field"),
        (
            {"selector": {"expressionSelectors": [{"key": "a", "operator": "In", "values": ["x"], "extra": 1}]}},
            "spec.selector.expressionSelectors[0].extra: unknown field",
        ),
        (
            {"selector": {"expressionSelectors": [{"key": "a"}]}},
            "spec.selector.expressionSelectors[0].operator: required field is missing",
        ),
    ],
)
def test_structure_errors_name_the_path(spec_changes: dict[str, Any], expected: str) -> None:
    assert errors_of(with_spec(POD_KILL, **spec_changes)) == [expected]


@pytest.mark.parametrize(
    ("spec_changes", "expected"),
    [
        ({"mode": 3}, "spec.mode: expected `str`, got `int`"),
        ({"containerNames": "prometheus"}, "spec.containerNames: expected `array`, got `str`"),
        ({"gracePeriod": "10"}, "spec.gracePeriod: expected `int`, got `str`"),
        ({"selector": {"namespaces": "default"}}, "spec.selector.namespaces: expected `array`, got `str`"),
        ({"selector": {"labelSelectors": ["a"]}}, "spec.selector.labelSelectors: expected `object`, got `array`"),
    ],
)
def test_wrong_type_names_the_path(spec_changes: dict[str, Any], expected: str) -> None:
    assert errors_of(with_spec(POD_KILL, **spec_changes)) == [expected]


def test_nested_wrong_type_in_network_block_names_the_path() -> None:
    assert errors_of(with_spec(BANDWIDTH, bandwidth={"rate": "1mbps", "limit": "big", "buffer": 1})) == [
        "spec.bandwidth.limit: expected `int`, got `str`"
    ]


def test_wrong_type_in_metadata_names_metadata() -> None:
    doc = doc_of(POD_KILL)
    doc["metadata"]["name"] = 7
    assert errors_of(doc) == ["metadata.name: expected `str`, got `int`"]


@pytest.mark.parametrize("kind", ["JVMChaos", "podchaos", "", None, 3])
def test_unknown_kind(kind: Any) -> None:
    doc = doc_of(POD_KILL)
    doc["kind"] = kind
    errors = errors_of(doc)
    # the executed kinds, whichever are registered
    assert errors == [f"kind: unknown kind {kind!r}; expected one of {', '.join(CHAOS_KINDS)}"]


@pytest.mark.parametrize("api_version", ["chaos-mesh.org/v1beta1", "v1", None])
def test_wrong_api_version(api_version: Any) -> None:
    doc = doc_of(POD_KILL)
    doc["apiVersion"] = api_version
    assert errors_of(doc) == [f"apiVersion: expected chaos-mesh.org/v1alpha1, got {api_version!r}"]


@pytest.mark.parametrize("metadata", [{}, {"namespace": "x"}, {"name": ""}, None])
def test_missing_name(metadata: Any) -> None:
    doc = doc_of(POD_KILL)
    doc["metadata"] = metadata
    assert errors_of(doc) == ["metadata.name: required"]


@pytest.mark.parametrize("action", ["pod-kil", "", "kill"])
def test_bad_podchaos_action(action: str) -> None:
    assert errors_of(with_spec(POD_KILL, action=action)) == [
        "spec.action: expected one of pod-kill, pod-failure, container-kill"
    ]


@pytest.mark.parametrize("action", ["delay2", "", "blackhole"])
def test_bad_networkchaos_action(action: str) -> None:
    assert errors_of(with_spec(PARTITION, action=action)) == [
        "spec.action: expected one of netem, delay, loss, duplicate, corrupt, partition, bandwidth"
    ]


def test_bad_direction() -> None:
    assert errors_of(with_spec(PARTITION, direction="sideways")) == ["spec.direction: expected one of to, from, both"]


def test_negative_grace_period() -> None:
    assert errors_of(with_spec(POD_KILL, gracePeriod=-1)) == ["spec.gracePeriod: must be >= 0, got -1"]


@pytest.mark.parametrize("names", [None, []])
def test_container_kill_without_container_names(names: list[str] | None) -> None:
    assert errors_of(with_spec(CONTAINER_KILL, containerNames=names)) == [
        "spec.containerNames: container-kill needs at least one container name"
    ]


@pytest.mark.parametrize("direction", ["from", "both"])
def test_from_or_both_without_target_is_refused_for_non_partition(direction: str) -> None:
    assert errors_of(with_spec(DELAY, direction=direction)) == [f"spec.target: direction {direction} needs a target"]


@pytest.mark.parametrize("direction", ["from", "both"])
def test_from_or_both_without_target_is_allowed_for_partition(direction: str) -> None:
    spec = decode_object(with_spec(PARTITION_NO_TARGET, direction=direction)).spec
    assert isinstance(spec, NetworkChaosSpec)
    assert (spec.direction, spec.target) == (direction, None)


@pytest.mark.parametrize("direction", ["from", "both"])
def test_from_or_both_with_external_targets_is_refused_for_non_partition(direction: str) -> None:
    target = {"mode": "all", "selector": {}}
    errors = errors_of(with_spec(DELAY_EXTERNAL, direction=direction, target=target))
    assert errors == [f"spec.externalTargets: cannot be used with direction {direction}"]


@pytest.mark.parametrize(
    "entry", ["1.2.3", "10.0.0.0/33", "1.2.3.4:0", "1.2.3.4:70000", "host:port", "-bad-.com", "::1", "a..b"]
)
def test_bad_external_target_names_its_index(entry: str) -> None:
    errors = errors_of(with_spec(PARTITION_EXTERNAL, externalTargets=["ok.example.com", entry]))
    assert len(errors) == 1 and errors[0].startswith("spec.externalTargets[1]: expected an IPv4 address")


@pytest.mark.parametrize(
    ("text", "network", "hostname", "port"),
    [
        ("1.2.3.4", "1.2.3.4/32", "", None),
        ("10.1.2.3/8", "10.0.0.0/8", "", None),
        ("1.2.3.4:8080", "1.2.3.4/32", "", 8080),
        ("WWW.Example.com", "", "www.example.com", None),
        ("db:5432", "", "db", 5432),
    ],
)
def test_parse_external(text: str, network: str, hostname: str, port: int | None) -> None:
    parsed = parse_external(text)
    assert parsed is not None
    assert (parsed.network, parsed.hostname, parsed.port) == (network, hostname, port)


@pytest.mark.parametrize(
    ("action", "block"),
    [
        ("delay", "delay"),
        ("loss", "loss"),
        ("duplicate", "duplicate"),
        ("corrupt", "corrupt"),
        ("bandwidth", "bandwidth"),
    ],
)
def test_action_block_is_required(action: str, block: str) -> None:
    doc = with_spec(PARTITION_NO_TARGET, action=action)
    assert errors_of(doc) == [f"spec.{block}: required for action {action}"]


def test_netem_needs_at_least_one_block() -> None:
    assert errors_of(with_spec(PARTITION_NO_TARGET, action="netem")) == [
        "spec: action netem needs at least one of delay, loss, duplicate, corrupt, rate"
    ]


@pytest.mark.parametrize(
    ("source", "changes", "expected_prefix"),
    [
        (DELAY, {"delay": {"latency": "90"}}, "spec.delay.latency: expected e.g. 100ms"),
        (DELAY, {"delay": {"latency": "1d"}}, "spec.delay.latency: expected e.g. 100ms"),
        (DELAY, {"delay": {"latency": "9ms", "jitter": "x"}}, "spec.delay.jitter: expected e.g. 10ms"),
        (DELAY, {"delay": {"latency": "9ms", "correlation": "abc"}}, "spec.delay.correlation: expected a number"),
        (
            DELAY,
            {"delay": {"latency": "9ms", "reorder": {"reorder": "150"}}},
            "spec.delay.reorder.reorder: expected a percentage in [0, 100]",
        ),
        (LOSS, {"loss": {"loss": "lots"}}, "spec.loss.loss: expected a number"),
        (LOSS, {"loss": {"loss": "101"}}, "spec.loss.loss: expected a percentage in [0, 100]"),
        (LOSS, {"loss": {"loss": "10", "correlation": "-1"}}, "spec.loss.correlation: expected a percentage"),
        (DUPLICATE, {"duplicate": {"duplicate": "x"}}, "spec.duplicate.duplicate: expected a number"),
        (CORRUPT, {"corrupt": {"corrupt": "200"}}, "spec.corrupt.corrupt: expected a percentage"),
        (
            BANDWIDTH,
            {"bandwidth": {"rate": "fast", "limit": 1, "buffer": 1}},
            "spec.bandwidth.rate: expected e.g. 1mbps",
        ),
        (BANDWIDTH, {"bandwidth": {"rate": "1mbps", "limit": 0, "buffer": 1}}, "spec.bandwidth.limit: required"),
        (BANDWIDTH, {"bandwidth": {"rate": "1mbps", "limit": 1}}, "spec.bandwidth.buffer: required"),
        (NETEM, {"rate": {"rate": "quick"}}, "spec.rate.rate: expected e.g. 1mbps"),
    ],
)
def test_bad_network_parameter_names_its_path(source: str, changes: dict[str, Any], expected_prefix: str) -> None:
    errors = errors_of(with_spec(source, **changes))
    assert len(errors) == 1 and errors[0].startswith(expected_prefix), errors


@pytest.mark.parametrize(
    ("selector", "expected_prefix"),
    [
        (
            {"expressionSelectors": [{"key": "a", "operator": "Equals", "values": ["x"]}]},
            "spec.selector.expressionSelectors[0].operator: expected one of In, NotIn, Exists, DoesNotExist",
        ),
        (
            {"expressionSelectors": [{"key": "a", "operator": "In"}]},
            "spec.selector.expressionSelectors[0].values: operator In needs at least one value",
        ),
        (
            {"expressionSelectors": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            "spec.selector.expressionSelectors[0].values: operator Exists takes no values",
        ),
        ({"fieldSelectors": {"spec.hostname": "x"}}, "spec.selector.fieldSelectors: unsupported field 'spec.hostname'"),
        ({"podPhaseSelectors": ["Running", "!"]}, "spec.selector.podPhaseSelectors[1]: empty phase"),
    ],
)
def test_bad_selector_names_its_path(selector: dict[str, Any], expected_prefix: str) -> None:
    errors = errors_of(with_spec(POD_KILL, selector=selector))
    assert len(errors) == 1 and errors[0].startswith(expected_prefix), errors


def test_every_problem_is_reported_at_once() -> None:
    errors = errors_of(with_spec(POD_KILL, action="nope", mode="fixed", value="0", duration="-5s", gracePeriod=-2))
    assert [e.split(":", 1)[0] for e in errors] == ["spec.action", "spec.value", "spec.duration", "spec.gracePeriod"]


def test_invalid_object_message_joins_the_errors() -> None:
    with pytest.raises(InvalidObject, match="spec.action: .*; spec.gracePeriod: "):
        decode_object(with_spec(POD_KILL, action="nope", gracePeriod=-1))


# --- YAML streams --------------------------------------------------------------------------------


def test_decode_documents_reads_every_document_in_order() -> None:
    objs = decode_documents("---\n".join([POD_KILL, PARTITION, HELLO]))
    assert [o.kind for o in objs] == ["PodChaos", "NetworkChaos", "HelloWorldChaos"]


def test_decode_documents_skips_empty_documents() -> None:
    assert [o.metadata.name for o in decode_documents(f"---\n---\n{POD_KILL}---\n")] == ["pod-kill-example"]


def test_decode_documents_accepts_json() -> None:
    assert decode_documents(json.dumps(doc_of(POD_KILL)))[0].metadata.name == "pod-kill-example"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("kind: PodChaos\nmetadata: [a\nspec: {}\n", 3),
        ("kind: PodChaos\nmetadata:\n  name: x\n   bad: indent\n", 4),
        ("a: 1\nb: 'unterminated\n", 3),
    ],
)
def test_invalid_yaml_names_the_line(text: str, line: int) -> None:
    with pytest.raises(InvalidObject) as info:
        decode_documents(text)
    [error] = info.value.errors
    assert error.startswith("yaml: invalid YAML (line ") and f"(line {line}," in error, error


def test_invalid_yaml_line_counts_across_documents() -> None:
    with pytest.raises(InvalidObject) as info:
        decode_documents(POD_KILL + "---\nkind: [oops\n")
    assert f"(line {POD_KILL.count(chr(10)) + 3}," in info.value.errors[0]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_document_is_refused(text: str) -> None:
    with pytest.raises(InvalidObject) as info:
        decode_documents(text)
    assert info.value.errors == ["document 1: expected a mapping with apiVersion and kind"]


def test_bad_second_document_is_named_by_position_kind_and_name() -> None:
    bad = yaml.safe_dump(with_spec(PARTITION, mode="bogus"))
    with pytest.raises(InvalidObject) as info:
        decode_documents(POD_KILL + "---\n" + bad)
    assert info.value.errors == [
        "document 2 (NetworkChaos/network-partition-example): spec.mode: expected one of one, all, fixed, "
        "fixed-percent, random-max-percent"
    ]


def test_bad_document_without_name_is_named_by_position() -> None:
    doc = doc_of(POD_KILL)
    doc["metadata"] = {}
    with pytest.raises(InvalidObject) as info:
        decode_documents(HELLO + "---\n" + yaml.safe_dump(doc))
    assert info.value.errors == ["document 2 (PodChaos/?): metadata.name: required"]


def test_every_error_of_a_bad_document_gets_the_prefix() -> None:
    bad = yaml.safe_dump(with_spec(POD_KILL, action="x", gracePeriod=-1))
    with pytest.raises(InvalidObject) as info:
        decode_documents(bad)
    assert len(info.value.errors) == 2
    assert all(e.startswith("document 1 (PodChaos/pod-kill-example): spec.") for e in info.value.errors)


# --- encode_object ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_encode_then_decode_round_trips(name: str) -> None:
    obj = decode(EXAMPLES[name])
    assert decode_object(encode_object(obj)) == obj


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_encoded_yaml_stream_round_trips(name: str) -> None:
    obj = decode(EXAMPLES[name])
    assert decode_documents(yaml.safe_dump(encode_object(obj))) == [obj]


def test_encode_uses_kubernetes_spelling() -> None:
    out = encode_object(decode(CONTAINER_KILL))
    assert (out["apiVersion"], out["kind"]) == (API_VERSION, "PodChaos")
    assert out["spec"]["containerNames"] == ["prometheus"]
    assert out["spec"]["selector"]["labelSelectors"] == {"app.kubernetes.io/component": "monitor"}


def test_encode_omits_absent_status_and_unset_fields() -> None:
    out = encode_object(decode(POD_KILL))
    assert "status" not in out
    assert "deletionTimestamp" not in out["metadata"] and "duration" not in out["spec"]


def test_encode_keeps_status_in_kubernetes_spelling() -> None:
    doc = doc_of(POD_FAILURE)
    doc["status"] = {
        "experiment": {
            "desiredPhase": "Run",
            "containerRecords": [{"id": "ns/p", "selectorKey": ".", "phase": "Injected", "injectedCount": 1}],
        }
    }
    record = encode_object(decode_object(doc))["status"]["experiment"]["containerRecords"][0]
    assert (record["selectorKey"], record["injectedCount"], record["recoveredCount"]) == (".", 1, 0)
