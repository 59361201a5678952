"""Bounded input: every bad value the trust review found is refused at admission with the field
named, by each way in (the CLI's YAML, a direct trigger's JSON, the scheduler decoding what it
reads from NATS), and never surfaces as AttributeError, OverflowError or RecursionError.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from typing import Any

import msgspec
import pytest
import yaml

from chaosbus.cli import resources
from chaosbus.common import admission
from chaosbus.common import messages as m
from chaosbus.common.crd import InvalidObject, bounds
from chaosbus.common.crd.meta import RECORDS_FINALIZER
from chaosbus.common.durations import parse_duration
from chaosbus.scheduler import requests as rq
from chaosbus.scheduler.core import SchedulerCore

API = "chaos-mesh.org/v1alpha1"


def network(**spec: Any) -> dict[str, Any]:
    body = {
        "action": "delay",
        "mode": "all",
        "selector": {"labelSelectors": {"app": "web"}},
        "delay": {"latency": "10ms"},
        **spec,
    }
    return {"apiVersion": API, "kind": "NetworkChaos", "metadata": {"name": "n1"}, "spec": body}


def bandwidth(**bw: Any) -> dict[str, Any]:
    return network(action="bandwidth", delay=None, bandwidth={"rate": "1mbps", "limit": 100, "buffer": 1000, **bw})


def schedule(every: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Schedule",
        "metadata": {"name": "s1"},
        "spec": {
            "schedule": every,
            "type": "PodChaos",
            "podChaos": {"action": "pod-kill", "mode": "one", "selector": {}},
        },
    }


def _drop_none(doc: dict[str, Any]) -> dict[str, Any]:
    doc["spec"] = {k: v for k, v in doc["spec"].items() if v is not None}
    return doc


# (document, the field the error must name)
BAD: dict[str, tuple[dict[str, Any], str]] = {
    "infinite latency": (network(delay={"latency": "9" * 400 + "ms"}), "spec.delay.latency"),
    "latency past the nftables clock": (network(delay={"latency": "2000000h"}), "spec.delay.latency"),
    "jitter past Go's duration": (network(delay={"latency": "1ms", "jitter": "3000000h"}), "spec.delay.jitter"),
    "duration past the nft deadline": (network(duration="5000000h"), "spec.duration"),
    "duration over 100 years": (network(duration="900000h"), "spec.duration"),
    "device with a newline": (network(device="eth0\n"), "spec.device"),
    "device too long": (network(device="a" * 16), "spec.device"),
    "device with a slash": (network(device="../x"), "spec.device"),
    "target device with a space": (network(targetDevice="eth 0"), "spec.targetDevice"),
    "bandwidth limit over u32": (_drop_none(bandwidth(limit=2**32)), "spec.bandwidth.limit"),
    "bandwidth buffer over u32": (_drop_none(bandwidth(buffer=2**40)), "spec.bandwidth.buffer"),
    "minburst over u32": (_drop_none(bandwidth(minburst=2**32, peakrate=10)), "spec.bandwidth.minburst"),
    "peakrate over u64": (_drop_none(bandwidth(peakrate=2**64, minburst=10)), "spec.bandwidth.peakrate"),
    "rate over u64": (_drop_none(bandwidth(rate="99999999999999999999tbps")), "spec.bandwidth.rate"),
    "reorder gap over u32": (
        network(delay={"latency": "1ms", "reorder": {"reorder": "10", "gap": 2**33}}),
        "spec.delay.reorder.gap",
    ),
    "integer past int64": (
        {
            "apiVersion": API,
            "kind": "PodChaos",
            "metadata": {"name": "p"},
            "spec": {"action": "pod-kill", "mode": "one", "selector": {}, "gracePeriod": 2**80},
        },
        "spec.gracePeriod",
    ),
    "mode value of 5000 digits": (
        {
            "apiVersion": API,
            "kind": "PodChaos",
            "metadata": {"name": "p"},
            "spec": {"action": "pod-kill", "mode": "fixed", "value": "9" * 5000, "selector": {}},
        },
        "spec.value",
    ),
    "namespace with a dot": ({**network(), "metadata": {"name": "n1", "namespace": "team.a"}}, "metadata.namespace"),
    "name with upper case": ({**network(), "metadata": {"name": "Web"}}, "metadata.name"),
    "name with a key wildcard": ({**network(), "metadata": {"name": "a>"}}, "metadata.name"),
    "selector namespace with a dot": (network(selector={"namespaces": ["a.b"]}), "spec.selector.namespaces[0]"),
    "metadata a string": ({**network(), "metadata": "n1"}, "metadata"),
    "metadata a list (Schedule)": ({**schedule("@hourly"), "metadata": ["s1"]}, "metadata"),
    "@every 9...9h": (schedule("@every " + "9" * 400 + "h"), "spec.schedule"),
    "@every past Go's duration": (schedule("@every 9999999h"), "spec.schedule"),
    "NaN percentage": (network(action="loss", delay=None, loss={"loss": "nan"}), "spec.loss.loss"),
    "infinite float in a free-form block": (
        {
            "apiVersion": API,
            "kind": "Workflow",
            "metadata": {"name": "w"},
            "spec": {
                "entry": "e",
                "templates": [{"name": "e", "templateType": "Task", "task": {"container": {"x": float("inf")}}}],
            },
        },
        "spec.templates[0].task.container.x",
    ),
}


def _deep(depth: int) -> dict[str, Any]:
    inner: Any = "leaf"
    for _ in range(depth):
        inner = {"a": inner}
    return {
        "apiVersion": API,
        "kind": "Workflow",
        "metadata": {"name": "w"},
        "spec": {"entry": "e", "templates": [{"name": "e", "templateType": "Task", "task": {"container": inner}}]},
    }


def _field_named(e: InvalidObject, field: str) -> bool:
    return any(err.startswith(f"{field}:") or f" {field}:" in err for err in e.errors)


@pytest.mark.parametrize("case", sorted(BAD))
def test_cli_admission_refuses_with_the_field(case: str) -> None:
    doc, field = BAD[case]
    with pytest.raises(InvalidObject) as e:
        admission.admit(json.loads(json.dumps(doc, allow_nan=True)))
    assert _field_named(e.value, field), e.value.errors


@pytest.mark.parametrize("case", sorted(BAD))
def test_trigger_refuses_with_the_field(case: str) -> None:
    doc, field = BAD[case]
    if case == "infinite float in a free-form block":
        pytest.skip("JSON has no infinity: the trigger refuses it as not JSON")
    with pytest.raises(rq.BadRequest) as e:
        rq.parse_apply(msgspec.json.encode(doc))
    assert field in str(e.value)


SCHEDULER_CASES = sorted(
    c
    for c, (doc, _) in BAD.items()
    if doc["kind"] in ("NetworkChaos", "PodChaos") and isinstance(doc["metadata"], dict)
)


@pytest.mark.parametrize("case", SCHEDULER_CASES)
def test_the_scheduler_refuses_what_it_reads_from_nats_and_goes_on(case: str) -> None:
    """An object that never went through apply (KV written by hand, Kubernetes) is decoded by the
    scheduler with the same bounds: it is reported, nothing is sent, and the next one still runs.
    """
    doc, field = BAD[case]
    core = SchedulerCore(rng=random.Random(1))
    core.on_target(
        "pod.default.web-0",
        m.TargetPod(
            uid="u-w0",
            namespace="default",
            name="web-0",
            node="n1",
            labels={"app": "web"},
            pod_ip="10.0.0.1",
            phase="Running",
        ),
    )
    bad = _as_stored(doc, "bad")
    out = core.on_object(_event(bad), 1.0)
    assert not out.commands and len(out.errors) == 1 and field in out.errors[0]
    good = core.on_object(_event(_as_stored(network(), "good")), 1.0)
    assert good.commands and not good.errors


def _as_stored(doc: dict[str, Any], uid: str) -> dict[str, Any]:
    meta = doc["metadata"] if isinstance(doc["metadata"], dict) else {}
    return {
        **doc,
        "metadata": {
            "name": "n1",
            **meta,
            "namespace": meta.get("namespace", "default"),
            "uid": uid,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "finalizers": [RECORDS_FINALIZER],
        },
    }


def _event(obj: dict[str, Any]) -> m.ObjectEvent:
    md = obj["metadata"]
    return m.ObjectEvent(
        type="ADDED",
        kind=obj["kind"],
        namespace="default",
        name="n1",
        uid=md["uid"],
        object=msgspec.Raw(msgspec.json.encode(obj)),
    )


def test_metadata_that_is_not_a_mapping_never_reaches_the_scheduler_as_an_attribute_error() -> None:
    core = SchedulerCore()
    obj = {**network(), "metadata": "n1"}
    out = core.on_object(
        m.ObjectEvent(
            type="ADDED",
            kind="NetworkChaos",
            namespace="default",
            name="n1",
            uid="x",
            object=msgspec.Raw(msgspec.json.encode(obj)),
        ),
        1.0,
    )
    assert out.errors and "metadata: must be a mapping" in out.errors[0]


def test_20000_deep_yaml_is_refused_naming_the_line() -> None:
    text = (
        "apiVersion: chaos-mesh.org/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec: "
        + "[" * 20000
        + "]" * 20000
        + "\n"
    )
    with pytest.raises(InvalidObject) as e:
        resources.prepare(text, None)
    assert e.value.errors[0].startswith("yaml: nested deeper than 64 levels (line 4)")


def test_deep_json_is_refused_by_trigger_and_scheduler() -> None:
    deep = (
        b'{"apiVersion":"chaos-mesh.org/v1alpha1","kind":"Workflow","metadata":{"name":"w"},"spec":'
        + b'{"a":' * 20000
        + b"1"
        + b"}" * 20000
        + b"}"
    )
    with pytest.raises(rq.BadRequest):
        rq.parse_apply(deep)
    with pytest.raises(InvalidObject) as e:
        admission.admit(_deep(200))
    assert "nested deeper than 64 levels" in str(e.value)
    from chaosbus.common.crd.objects import decode_object_json

    with pytest.raises(InvalidObject):
        decode_object_json(b'{"kind":"NetworkChaos","spec":' + b"[" * 20000 + b"]" * 20000 + b"}")


ALIAS_BOMB = """apiVersion: chaos-mesh.org/v1alpha1
kind: Workflow
metadata: {name: w}
spec:
  entry: e
  templates:
  - name: e
    templateType: Task
    task:
      container:
        a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
        b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
        c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
        d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
        e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
        f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
        g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
        h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
        i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_a_yaml_alias_bomb_in_a_free_form_workflow_field_is_refused() -> None:
    assert len(ALIAS_BOMB) < 700
    with pytest.raises(InvalidObject) as e:
        resources.prepare(ALIAS_BOMB, None)
    assert "more than 100000 values once aliases are expanded" in str(e.value)


def test_small_aliases_are_still_accepted() -> None:
    text = (
        "apiVersion: chaos-mesh.org/v1alpha1\nkind: PodChaos\nmetadata: {name: p, labels: &l {a: b}, "
        "annotations: *l}\nspec: {action: pod-kill, mode: one, selector: {labelSelectors: *l}}\n"
    )
    [obj] = resources.prepare(text, None)
    assert obj["spec"]["selector"]["labelSelectors"] == {"a": "b"}


LOADERS = [bounds._LOADER, bounds._PureLoader]  # libyaml's parser under the bounded composer, and pure Python


@pytest.mark.parametrize("loader", LOADERS, ids=lambda c: c.__name__)
def test_both_yaml_loaders_read_alike_and_keep_the_bounds(loader: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (
        "apiVersion: chaos-mesh.org/v1alpha1\nkind: NetworkChaos\nmetadata: {name: n, labels: &l {a: b}}\n"
        "spec:\n  action: partition\n  mode: all\n  selector: {labelSelectors: *l}\n  direction: to\n"
        "  externalTargets: ['192.0.2.0/24']\n  duration: 30s\n---\nkind: PodChaos\nmetadata: {name: p}\n"
        "spec: {value: '1', n: 1.5, t: true, z: null, d: 2026-12-07}\n"
    )
    expected = list(yaml.safe_load_all(text))
    monkeypatch.setattr(bounds, "_LOADER", loader)
    assert bounds.load_yaml(text) == expected
    with pytest.raises(InvalidObject) as e:
        bounds.load_yaml("a: 1\nb: " + "[" * 70 + "]" * 70 + "\n")
    assert e.value.errors == ["yaml: nested deeper than 64 levels (line 2)"]
    with pytest.raises(InvalidObject, match="more than 100000 values once aliases are expanded"):
        bounds.load_yaml(ALIAS_BOMB)
    for bad in ("kind: [unclosed", "a: \ud800", "a: \x07", "a: !!python/object:os.system x"):
        with pytest.raises(InvalidObject, match="^yaml: invalid YAML"):
            bounds.load_yaml(bad)


def test_an_oversized_document_is_refused() -> None:
    text = "apiVersion: chaos-mesh.org/v1alpha1\nkind: PodChaos\nmetadata: {name: p}\n# " + "x" * (2 << 20)
    with pytest.raises(InvalidObject) as e:
        resources.prepare(text, None)
    assert e.value.errors == [f"yaml: larger than {bounds.MAX_DOCUMENT_BYTES} bytes"]


def test_yaml_infinity_and_huge_numbers_are_refused_with_the_field() -> None:
    text = yaml.safe_dump(network()).replace("latency: 10ms", "latency: 10ms\n    correlation: .inf")
    with pytest.raises(InvalidObject) as e:
        resources.prepare(text, None)
    assert "spec.delay.correlation: must be a finite number" in str(e.value)


def test_go_duration_bounds() -> None:
    assert parse_duration("2562047h") == 2562047 * 3600
    with pytest.raises(ValueError, match="longer than Go's maximum"):
        parse_duration("2562048h")
    with pytest.raises(ValueError, match="longer than Go's maximum"):
        parse_duration("9" * 400 + "ms")


def test_largest_accepted_values_still_pass() -> None:
    admission.admit(network(duration="876000h", device="veth-abcdef0123", delay={"latency": "876000h"}))
    admission.admit(_drop_none(bandwidth(limit=2**32 - 1, buffer=2**32 - 1, peakrate=2**64 - 1, minburst=2**32 - 1)))
    admission.admit(_deep(40))


def test_cli_apply_exits_with_the_field_and_no_traceback(tmp_path: Any) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(network(delay={"latency": "9" * 400 + "ms"})))
    done = subprocess.run(
        [sys.executable, "-m", "chaosbus.cli.main", "--nats", "nats://127.0.0.1:1", "apply", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "spec.delay.latency: invalid duration" in done.stderr and "Traceback" not in done.stderr


def test_an_experiment_over_the_target_cap_fails_its_selection_naming_the_cap() -> None:
    from chaosbus.scheduler.selection import SelectionConfig

    core = SchedulerCore(SelectionConfig(max_targets=2), rng=random.Random(1))
    for i in range(3):
        core.on_target(
            f"pod.default.web-{i}",
            m.TargetPod(
                uid=f"u{i}", namespace="default", name=f"web-{i}", node="n1", labels={"app": "web"}, phase="Running"
            ),
        )
    out = core.on_object(_event(_as_stored(network(), "capped")), 1.0)
    assert not out.commands
    [decision] = out.decisions
    assert decision.records is None
    assert decision.selection_error.startswith("spec.selector: 3 targets selected, more than the 2")


def test_an_object_too_large_to_store_with_its_status_is_refused() -> None:
    doc = network()
    doc["metadata"]["annotations"] = {f"k{i}": "v" * 200_000 for i in range(3)}
    with pytest.raises(InvalidObject) as e:
        admission.admit(doc)
    assert e.value.errors[0].startswith("object: ") and f"more than {bounds.MAX_OBJECT_BYTES}" in e.value.errors[0]


def test_cli_apply_of_a_binary_or_endless_file_is_a_clear_error(tmp_path: Any) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"kind: \xff\xfe\n")
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"# " + b"x" * (bounds.MAX_DOCUMENT_BYTES + 10))
    for path, says in ((binary, "not UTF-8 text (byte 6)"), (huge, f"larger than {bounds.MAX_DOCUMENT_BYTES} bytes")):
        done = subprocess.run(
            [sys.executable, "-m", "chaosbus.cli.main", "--nats", "nats://127.0.0.1:1", "apply", "-f", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
