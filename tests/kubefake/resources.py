"""What the fake serves: built-in core resources and those registered by creating a
CustomResourceDefinition, plus the Status error bodies every API error uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

_META_FIELDS = ("metadata.name", "metadata.namespace")
POD_FIELDS = (
    *_META_FIELDS,
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
EVENT_FIELDS = (
    *_META_FIELDS,
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False
    generation: bool = True
    field_keys: tuple[str, ...] = _META_FIELDS
    custom: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str, str]:
        return self.group, self.version, self.plural

    @property
    def qualified(self) -> str:
        """`networkchaos.chaos-mesh.org` or `pods`, as error messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


BUILTINS = (
    Resource("", "v1", "pods", "Pod", status_subresource=True, field_keys=POD_FIELDS),
    Resource(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        status_subresource=True,
        generation=False,
        field_keys=(*_META_FIELDS, "status.phase"),
    ),
    Resource(
        "",
        "v1",
        "nodes",
        "Node",
        namespaced=False,
        status_subresource=True,
        generation=False,
        field_keys=(*_META_FIELDS, "spec.unschedulable"),
    ),
    Resource("", "v1", "events", "Event", generation=False, field_keys=EVENT_FIELDS),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", generation=False),
    Resource("", "v1", "configmaps", "ConfigMap", generation=False),
    Resource("events.k8s.io", "v1", "events", "Event", generation=False, field_keys=EVENT_FIELDS),
    Resource(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        status_subresource=True,
    ),
)


def from_crd(crd: Obj) -> list[Resource]:
    """The resources one CRD serves (one per served version)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        out.append(
            Resource(
                group=spec.get("group", ""),
                version=v.get("name", ""),
                plural=names.get("plural", ""),
                kind=names.get("kind", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                status_subresource="status" in (v.get("subresources") or {}),
                custom=True,
            )
        )
    return out


class ApiError(Exception):
    """An API error, answered as a Status object with `code` as the HTTP status."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> Obj:
        out: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            out["details"] = self.details
        out["code"] = self.code
        return out


def details(res: Resource, name: str, *, kind: str | None = None, **extra: Any) -> Obj:
    out: Obj = {"name": name} if name else {}
    if res.custom or res.group == "apiextensions.k8s.io":
        out["group"] = res.group
    out["kind"] = kind or res.plural
    out.update(extra)
    return out


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', details(res, name))


def conflict(res: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again",
        details(res, name),
    )


def invalid(res: Resource, name: str, causes: list[tuple[str, str, str]], *, kind: str | None = None) -> ApiError:
    """422 with details.causes [(reason, message, field)]."""
    what = f"{res.kind}.{res.group}" if res.custom else res.kind
    if kind is not None:
        what = f"{kind}.{res.group}" if res.custom else kind
    texts = list(dict.fromkeys(f"{f}: {m}" for _, m, f in causes))
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{what} "{name}" is invalid: {summary}',
        details(
            res, name, kind=kind or res.kind, causes=[{"reason": r, "message": m, "field": f} for r, m, f in causes]
        ),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)
