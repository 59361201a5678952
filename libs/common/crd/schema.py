"""CustomResourceDefinitions generated from the msgspec models: msgspec's JSON Schema turned into
the structural OpenAPI v3 schema Kubernetes requires (references inlined, `null` unions as
`nullable`, maps as `additionalProperties`, free-form parts as `x-kubernetes-preserve-unknown-fields`,
no `default`s: defaulting is chaosbus's admission step, as it is Chaos Mesh's webhook's), plus the
checks the API server makes itself (apirules: enums, bounds, CEL rules, immutable specs).
`scripts/gen_crds.py` writes them to deploy/k8s/crds/; a contract test keeps them fresh.
"""

from __future__ import annotations

import inspect
from typing import Any

import msgspec
import yaml

from chaosbus.common.crd import apirules
from chaosbus.common.crd.objects import API_VERSION
from chaosbus.common.crd.registry import ALL_KINDS, CHAOS_KINDS, KindInfo

GROUP, VERSION = API_VERSION.split("/")
Schema = dict[str, Any]
_DROP = ("title", "default", "$ref", "$defs", "anyOf", "required", "additionalProperties")


def structural(schema: Schema, defs: dict[str, Schema] | None = None) -> Schema:
    """One msgspec JSON Schema node as a structural OpenAPI v3 schema node."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return structural(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        if len(options) == 1:
            union = structural(options[0], defs)
        elif {o.get("type") for o in options} == {"integer", "string"}:
            union = {"x-kubernetes-int-or-string": True}
        else:
            union = {"x-kubernetes-preserve-unknown-fields": True}
        if nullable:
            union["nullable"] = True
        return union
    out: Schema = {k: v for k, v in schema.items() if k not in _DROP and k not in ("properties", "items")}
    if isinstance(out.get("description"), str):  # msgspec >= 0.23 dedents docstrings, older ones do not
        out["description"] = inspect.cleandoc(out["description"])
    if "type" not in schema:
        return {"x-kubernetes-preserve-unknown-fields": True}
    if schema["type"] == "object":
        if "properties" in schema:
            out["properties"] = {k: structural(v, defs) for k, v in schema["properties"].items()}
        elif isinstance(schema.get("additionalProperties"), dict):
            out["additionalProperties"] = structural(schema["additionalProperties"], defs)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if schema["type"] == "array" and "items" in schema:
        out["items"] = structural(schema["items"], defs)
    return out


def spec_schema(info: KindInfo) -> Schema:
    out = structural(msgspec.json.schema(info.spec))
    if info.open_spec:
        out["x-kubernetes-preserve-unknown-fields"] = True
        out.setdefault("type", "object")
    return out


def printer_columns(info: KindInfo) -> list[Schema]:
    fields = msgspec.structs.fields(info.spec)
    names = {f.encode_name for f in fields}
    cols: list[Schema] = []
    if info.experiment:
        if "action" in names:
            cols.append({"name": "Action", "type": "string", "jsonPath": ".spec.action"})
        cols.append({"name": "Duration", "type": "string", "jsonPath": ".spec.duration"})
        cols.append(
            {
                "name": "Phase",
                "type": "string",
                "jsonPath": ".status.phase",
                "description": "Injecting, Running, Paused, Recovering, Finished, Failed or Deleting",
            }
        )
        cols.append(
            {"name": "Injected", "type": "integer", "jsonPath": ".status.injected", "description": "targets injected"}
        )
        cols.append(
            {"name": "Total", "type": "integer", "jsonPath": ".status.total", "description": "targets selected"}
        )
        cols.append(
            {
                "name": "Desired",
                "type": "string",
                "priority": 1,
                "jsonPath": ".status.experiment.desiredPhase",
                "description": "Chaos Mesh's desiredPhase: Run or Stop",
            }
        )
    cols.append(
        {
            "name": "Supported",
            "type": "string",
            "priority": 1,
            "jsonPath": '.status.conditions[?(@.type=="Supported")].reason',
        }
    )
    cols.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    return cols


def crd(info: KindInfo) -> Schema:
    names: Schema = {
        "kind": info.kind,
        "listKind": f"{info.kind}List",
        "plural": info.plural,
        "singular": info.kind.lower(),
        "categories": ["chaos-mesh"],
    }
    if info.short_names:
        names["shortNames"] = list(info.short_names)
    root = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": apirules.apply(info.kind, info.kind in CHAOS_KINDS, spec_schema(info)),
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "chaosbus"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced" if info.namespaced else "Cluster",
            "names": names,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(info),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


HEADER = "# Generated by scripts/gen_crds.py from the msgspec models in libs/common/crd/. Do not edit.\n"


def rendered() -> dict[str, str]:
    """File name -> YAML text for every CRD."""
    return {
        f"{info.plural}.{GROUP}.yaml": HEADER + yaml.safe_dump(crd(info), sort_keys=False, width=120)
        for info in ALL_KINDS.values()
    }
