"""StatusCheck templates as Chaos Mesh stores them: a ConfigMap `template-status-check-<name>` in the
template's namespace, labelled `template.chaos-mesh.org/type: StatusCheck` and
`app.kubernetes.io/managed-by: chaos-mesh`, annotated with the template's name and description,
whose data key `spec` holds a StatusCheck spec as YAML. Chaos Mesh's dashboard creates and lists
them and copies a template's spec into a new StatusCheck; so does chaosbus (`chaosbus template
statuscheck`), reading and writing the same ConfigMaps. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import yaml

from chaosbus.common.crd import bounds
from chaosbus.common.crd.errors import InvalidObject, Problems, from_msgspec
from chaosbus.common.crd.objects import API_VERSION
from chaosbus.common.crd.orchestration import StatusCheckSpec

Obj = dict[str, Any]

TYPE_LABEL = "template.chaos-mesh.org/type"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "chaos-mesh"
NAME_ANNOTATION = "template.chaos-mesh.org/name"
DESCRIPTION_ANNOTATION = "template.chaos-mesh.org/description"
PREFIX = "template-status-check-"
SPEC_KEY = "spec"
MAX_DESCRIPTION = 1024


# Chaos Mesh's dashboard writes the spec with gopkg.in/yaml.v3, which ignores the Go types' json tags:
# keys are the Go field names lowercased and the embedded structs are nested under their type names.
# camelCase key -> Chaos Mesh's key, for the spec and for its `http` part.
_GO_SPEC = {
    "mode": "mode",
    "type": "type",
    "duration": "duration",
    "timeoutSeconds": "timeoutseconds",
    "intervalSeconds": "intervalseconds",
    "failureThreshold": "failurethreshold",
    "successThreshold": "successthreshold",
    "recordsHistoryLimit": "recordshistorylimit",
}
_GO_HTTP = {"url": "requesturl", "method": "requestmethod", "headers": "requestheaders", "body": "requestbody"}
_GO_ROOT, _GO_EMBED, _GO_HTTP_KEY = "statuscheckspec", "embedstatuscheck", "httpstatuscheck"


@dataclass(frozen=True)
class Template:
    namespace: str
    name: str
    description: str
    uid: str
    created: str
    spec: Obj  # the StatusCheck spec, camelCase, as a StatusCheck object carries it


def configmap_name(template_name: str) -> str:
    return PREFIX + template_name


def is_template(cm: Obj) -> bool:
    """Chaos Mesh's test: both labels, and the ConfigMap named after the template's name annotation."""
    meta = cm.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    return (
        cm.get("kind") == "ConfigMap"
        and labels.get(MANAGED_BY_LABEL) == MANAGED_BY
        and labels.get(TYPE_LABEL) == "StatusCheck"
        and bool(annotations.get(NAME_ANNOTATION))
        and meta.get("name") == configmap_name(str(annotations.get(NAME_ANNOTATION)))
    )


def checked_spec(raw: Any, field: str) -> Obj:
    """A StatusCheck spec decoded as admission decodes a StatusCheck's (unknown fields refused by
    name, types checked), returned as plain camelCase data. Raises InvalidObject naming `field`.
    """
    if not isinstance(raw, dict):
        raise InvalidObject([f"{field}: must be a mapping, got {type(raw).__name__}"])
    bounds.checked_tree(raw, field)
    try:
        spec = msgspec.convert(raw, StatusCheckSpec)
    except msgspec.ValidationError as e:
        raise from_msgspec(e, field) from None
    out: Obj = msgspec.to_builtins(spec)
    return out


def _renamed(key: object, names: dict[str, str], *, back: bool = False) -> str:
    """camelCase -> Chaos Mesh's key (or back); a key neither knows stays as it is."""
    text = str(key)
    if back:
        return next((camel for camel, go in names.items() if go == text), text)
    return names.get(text, text)


def _present(value: Any) -> bool:
    """Go's zero values (what yaml.v3 writes for unset fields) mean "not set"."""
    return value not in (None, "", 0, {}, [])


def from_chaos_mesh(doc: Obj) -> Obj:
    """A spec in either form (Chaos Mesh's yaml.v3 keys, or a StatusCheck's camelCase) as camelCase.
    Keys Chaos Mesh does not know (chaosbus's extensions) are kept as they are.
    """
    if _GO_ROOT not in doc:
        return doc
    root = doc[_GO_ROOT]
    if not isinstance(root, dict):
        return doc  # left for checked_spec to refuse, naming the field
    out: Obj = {_renamed(k, _GO_SPEC, back=True): v for k, v in root.items() if k != _GO_EMBED and _present(v)}
    http = ((root.get(_GO_EMBED) or {}) if isinstance(root.get(_GO_EMBED), dict) else {}).get(_GO_HTTP_KEY)
    if isinstance(http, dict):
        out_http: Obj = {
            _renamed(k, _GO_HTTP, back=True): v for k, v in http.items() if k != "criteria" and _present(v)
        }
        criteria = http.get("criteria")
        if isinstance(criteria, dict):
            out_http["criteria"] = {("statusCode" if k == "statuscode" else k): v for k, v in criteria.items()}
        out["http"] = out_http
    return out


def to_chaos_mesh(spec: Obj) -> Obj:
    """A camelCase spec (defaults filled) in the form Chaos Mesh's dashboard writes and reads."""
    root: Obj = {_renamed(k, _GO_SPEC): v for k, v in spec.items() if k != "http"}
    http = spec.get("http")
    if isinstance(http, dict):
        go_http: Obj = {
            "requestmethod": "GET",
            **{_renamed(k, _GO_HTTP): v for k, v in http.items() if k != "criteria"},
        }
        go_http["criteria"] = {"statuscode": (http.get("criteria") or {}).get("statusCode", "")}
        root[_GO_EMBED] = {_GO_HTTP_KEY: go_http}
    return {_GO_ROOT: root}


def configmap(namespace: str, name: str, spec: Any, description: str = "") -> Obj:
    """The ConfigMap Chaos Mesh's dashboard writes for a new template (its spec in Chaos Mesh's
    form, so either tool reads the other's templates).
    """
    problems = Problems()
    bounds.dns_label(problems, "metadata.namespace", namespace)
    bounds.dns_subdomain(problems, "name", configmap_name(name))
    if len(description) > MAX_DESCRIPTION:
        problems.add("description", f"at most {MAX_DESCRIPTION} characters, got {len(description)}")
    problems.raise_if_any()
    checked = checked_spec(spec, "spec")
    full = msgspec.to_builtins(msgspec.convert(checked, StatusCheckSpec), order="deterministic")
    defaults = msgspec.structs.asdict(StatusCheckSpec())
    text = yaml.safe_dump(
        to_chaos_mesh({**{_camel(k): v for k, v in defaults.items() if v is not None and k != "http"}, **full}),
        sort_keys=False,
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(name),
            "namespace": namespace,
            "labels": {TYPE_LABEL: "StatusCheck", MANAGED_BY_LABEL: MANAGED_BY},
            "annotations": {NAME_ANNOTATION: name, DESCRIPTION_ANNOTATION: description},
        },
        "data": {SPEC_KEY: text},
    }


def read(cm: Obj) -> Template:
    """The template a ConfigMap holds. Raises InvalidObject (naming the field) for a ConfigMap that
    is not a StatusCheck template or whose spec does not decode.
    """
    if not is_template(cm):
        raise InvalidObject(
            [
                f"metadata: not a StatusCheck template (labels {TYPE_LABEL}=StatusCheck and "
                f"{MANAGED_BY_LABEL}={MANAGED_BY}, named {PREFIX}<{NAME_ANNOTATION}>)"
            ]
        )
    meta = cm["metadata"]
    text = (cm.get("data") or {}).get(SPEC_KEY)
    if not isinstance(text, str):
        raise InvalidObject([f"data.{SPEC_KEY}: required, the StatusCheck spec as YAML"])
    try:
        raw = bounds.load_yaml(text)
    except InvalidObject as e:
        raise InvalidObject([f"data.{SPEC_KEY}: {err}" for err in e.errors]) from None
    docs = [d for d in raw if d is not None]
    if len(docs) != 1:
        raise InvalidObject([f"data.{SPEC_KEY}: expected one YAML document, got {len(docs)}"])
    annotations = meta.get("annotations") or {}
    return Template(
        namespace=str(meta.get("namespace") or "default"),
        name=str(annotations[NAME_ANNOTATION]),
        description=str(annotations.get(DESCRIPTION_ANNOTATION) or ""),
        uid=str(meta.get("uid") or ""),
        created=str(meta.get("creationTimestamp") or ""),
        spec=checked_spec(from_chaos_mesh(docs[0]) if isinstance(docs[0], dict) else docs[0], f"data.{SPEC_KEY}"),
    )


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w.title() for w in rest)


def statuscheck(template: Template, name: str) -> Obj:
    """A new StatusCheck carrying the template's spec, as the dashboard creates one from it."""
    return {
        "apiVersion": API_VERSION,
        "kind": "StatusCheck",
        "metadata": {"name": name, "namespace": template.namespace, "annotations": {NAME_ANNOTATION: template.name}},
        "spec": template.spec,
    }
