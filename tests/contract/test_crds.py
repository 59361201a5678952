"""The CRDs in deploy/k8s/crds are generated from the msgspec models and fresh; they are structural;
every chaos-mesh.org kind has one; and every example object (tests/data/chaos-mesh-examples,
written from Chaos Mesh's field tables) decodes unchanged and fits its CRD's schema without pruning.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from chaosbus.common.crd import ACCEPTED, ALL_KINDS, CHAOS_KINDS, decode_any, registry
from chaosbus.common.crd.schema import crd

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "tests" / "data" / "chaos-mesh-examples").glob("*.yaml"))


def _gen_module() -> Any:
    spec = importlib.util.spec_from_file_location("gen_crds", ROOT / "scripts" / "gen_crds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def examples() -> list[dict[str, Any]]:
    return [d for p in EXAMPLES for d in yaml.safe_load_all(p.read_text()) if d]


def test_generated_crds_are_fresh() -> None:
    gen = _gen_module()
    out = ROOT / "deploy" / "k8s" / "crds"
    current = {p.name: p.read_text() for p in out.glob("*.yaml")}
    assert current == gen.expected(), "stale: run python scripts/gen_crds.py"


def test_every_chaos_mesh_kind_has_a_crd_with_status_and_columns() -> None:
    assert len(registry.CHAOS_MESH_KINDS) == 23
    for info in ALL_KINDS.values():
        doc = crd(info)
        version = doc["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns[-1] == "Age"
        if info.experiment:
            paths = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
            assert {k: paths.get(k) for k in ("Duration", "Phase", "Injected", "Total")} == {
                "Duration": ".spec.duration",
                "Phase": ".status.phase",
                "Injected": ".status.injected",
                "Total": ".status.total",
            }, info.kind
        assert doc["spec"]["names"].get("shortNames"), info.kind
    shorts = [s for i in ALL_KINDS.values() for s in i.short_names]
    assert len(shorts) == len(set(shorts))
    assert not set(shorts) & {"pc", "sc", "rc", "po", "no", "ns", "ev", "cm", "ep", "svc"}  # core short names


def _walk(node: Any, path: str) -> list[str]:
    problems = []
    if isinstance(node, dict):
        for bad in ("$ref", "anyOf", "title", "default", "$defs"):
            if bad in node:
                problems.append(f"{path}: {bad}")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties false")
        if "type" not in node and not (
            node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
        ):
            problems.append(f"{path}: no type")
        for key, child in (node.get("properties") or {}).items():
            problems += _walk(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            problems += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            problems += _walk(node["additionalProperties"], f"{path}{{}}")
    return problems


@pytest.mark.parametrize("kind", list(ALL_KINDS))
def test_schemas_are_structural(kind: str) -> None:
    schema = crd(ALL_KINDS[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema, kind) == []


def _fits(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """What a real API server would reject or prune from `value` under `schema`."""
    if value is None:
        return [] if schema.get("nullable") else [f"{path}: null"]
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool}
    if kind in types and not isinstance(value, types[kind]):
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    if kind in ("integer", "number") and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return [f"{path}: expected {kind}"]
    problems = []
    if isinstance(value, dict) and kind == "object":
        props = schema.get("properties")
        for key, child in value.items():
            if props is not None and key in props:
                problems += _fits(child, props[key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += _fits(child, schema["additionalProperties"], f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                problems.append(f"{path}.{key}: would be pruned")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, child in enumerate(value):
            problems += _fits(child, schema["items"], f"{path}[{i}]")
    return problems


# Re-encoding omits fields equal to their default (msgspec omit_defaults); such a field is not lost.
DEFAULTS = {
    "failureThreshold": 3,
    "timeoutSeconds": 1,
    "intervalSeconds": 10,
    "successThreshold": 1,
    "recordsHistoryLimit": 100,
    "mode": "Synchronous",
    "type": "HTTP",
    "method": "GET",
    "percent": 100,
    "port": 9277,
    "concurrencyPolicy": "Forbid",
    "jitter": "0ms",
    "correlation": "0",
}


def _subset(small: Any, big: Any, path: str = "spec") -> list[str]:
    if isinstance(small, dict) and isinstance(big, dict):
        return [
            p
            for k, v in small.items()
            for p in (
                _subset(v, big[k], f"{path}.{k}")
                if k in big
                else []
                if v in (0, "", False, [], {}, None) or DEFAULTS.get(k) == v
                else [f"{path}.{k}: dropped"]
            )
        ]
    if isinstance(small, list) and isinstance(big, list) and len(small) == len(big):
        return [p for i, (a, b) in enumerate(zip(small, big, strict=True)) for p in _subset(a, b, f"{path}[{i}]")]
    return [] if small == big else [f"{path}: {small!r} became {big!r}"]


def test_examples_cover_every_kind_of_the_examples_table() -> None:
    kinds = {d["kind"] for d in examples()}
    assert {
        "PodChaos",
        "NetworkChaos",
        "StressChaos",
        "IOChaos",
        "TimeChaos",
        "DNSChaos",
        "HTTPChaos",
        "JVMChaos",
        "BlockChaos",
        "PhysicalMachineChaos",
        "PhysicalMachine",
        "Schedule",
        "Workflow",
        "StatusCheck",
        "RemoteCluster",
        "KernelChaos",
        "AWSChaos",
        "GCPChaos",
        "AzureChaos",
    } <= kinds


@pytest.mark.parametrize("doc", examples(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_example_decodes_unchanged_and_fits_its_crd(doc: dict[str, Any]) -> None:
    info = ALL_KINDS[doc["kind"]]
    decoded = decode_any(doc)
    if doc["kind"] in CHAOS_KINDS:
        assert _subset(doc["spec"], decoded["spec"]) == []
    elif not info.open_spec:
        again = msgspec.to_builtins(msgspec.convert(doc["spec"], ACCEPTED[doc["kind"]].spec))
        assert _subset(doc["spec"], again) == []
    schema = crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    body = {k: v for k, v in doc.items() if k != "metadata"}  # the server handles metadata itself
    assert _fits(body, schema, doc["kind"]) == []
