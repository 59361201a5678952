"""Write semantics of the fake: create, update (PUT), patch, delete, with the rules the recorded
transcripts show (generation, status subresource, preconditions, finalizers, graceful Pod deletion,
no-op writes, dry run). Every method returns (HTTP status, body) or raises ApiError.
"""

from __future__ import annotations

import copy
import random
import re
import string
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from kubefake import events, patch
from kubefake.resources import ApiError, Resource, bad_request, conflict, details, from_crd, invalid, not_found
from kubefake.store import Store

Obj = dict[str, Any]
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
SERVER_META = (
    "uid",
    "creationTimestamp",
    "generation",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "name",
    "namespace",
    "generateName",
    "managedFields",
)
POD_MUTABLE_SPEC = ("image",)


def now(offset: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without(obj: Obj, *keys: str) -> Obj:
    return {k: v for k, v in obj.items() if k not in keys}


class Api:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._collecting = False

    # --- create -------------------------------------------------------------------------------
    def create(self, res: Resource, namespace: str, body: Any, *, dry_run: bool) -> tuple[int, Obj]:
        if not isinstance(body, dict):
            raise bad_request("the object provided is not a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
            if self.store.get(self.store.resources[("", "v1", "namespaces")], "", namespace) is None:
                raise ApiError(
                    404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
                )
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = meta.get("name", "")
        if not name:
            raise invalid(
                res, "", [("FieldValueRequired", "Required value: name or generateName is required", "metadata.name")]
            )
        if not _DNS1123.match(name) or len(name) > 253:
            raise invalid(
                res, name, [("FieldValueInvalid", f'Invalid value: "{name}": {_DNS1123_MSG}', "metadata.name")]
            )
        if res.key == ("", "v1", "pods"):
            _validate_pod(res, name, obj.get("spec") or {})
        if self.store.get(res, namespace if res.namespaced else "", name) is not None:
            raise ApiError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists', details(res, name))
        for f in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(f, None)
        meta["uid"], meta["creationTimestamp"] = str(uuid.uuid4()), now()
        if res.generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        obj = self._defaults(res, obj, namespace)
        if dry_run:
            return 201, obj
        stored = self.store.commit(res, "ADDED", obj, None)
        if res.key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            for served in from_crd(stored):
                self.store.register(served)
        self.collect_garbage()
        return 201, self._out(res, stored)

    def _defaults(self, res: Resource, obj: Obj, namespace: str) -> Obj:
        if res.status_subresource:
            obj.pop("status", None)
        if res.kind == "Pod":
            spec = obj.setdefault("spec", {})
            for k, v in (
                ("restartPolicy", "Always"),
                ("schedulerName", "default-scheduler"),
                ("serviceAccountName", "default"),
                ("terminationGracePeriodSeconds", 30),
                ("dnsPolicy", "ClusterFirst"),
                ("enableServiceLinks", True),
            ):
                spec.setdefault(k, v)
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif res.kind == "Namespace":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
        elif res.kind == "Event":
            obj = events.check(res, obj, namespace)
            obj["metadata"].pop("generation", None)
        elif res.kind == "CustomResourceDefinition":
            obj["status"] = {
                "acceptedNames": (obj.get("spec") or {}).get("names", {}),
                "conditions": [{"type": "Established", "status": "True"}],
            }
        return obj

    # --- update and patch ---------------------------------------------------------------------
    def replace(
        self, res: Resource, namespace: str, name: str, body: Any, *, status: bool, dry_run: bool
    ) -> tuple[int, Obj]:
        current = self._current(res, namespace, name)
        if not isinstance(body, dict):
            raise bad_request("the object provided is not a JSON object")
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if not rv and res.custom:
            raise invalid(
                res,
                name,
                [
                    (
                        "FieldValueInvalid",
                        "Invalid value: 0: must be specified for an update",
                        "metadata.resourceVersion",
                    )
                ],
                kind=res.plural,
            )
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        return self._write(res, current, copy.deepcopy(body), status=status, dry_run=dry_run)

    def patch(
        self, res: Resource, namespace: str, name: str, content_type: str, raw: bytes, *, status: bool, dry_run: bool
    ) -> tuple[int, Obj]:
        import json

        allowed = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
        if not res.custom:
            allowed.append("application/strategic-merge-patch+json")
        ctype = content_type.split(";")[0].strip()
        if ctype not in allowed or ctype == "application/apply-patch+yaml":
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - "
                "accepted media types include: " + ", ".join(allowed),
            )
        current = self._current(res, namespace, name)
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise bad_request(f"error decoding patch: {e}") from None
        try:
            if ctype == "application/json-patch+json":
                if not isinstance(body, list):
                    raise bad_request(
                        "error decoding patch: json: cannot unmarshal object into Go value of type "
                        "[]handlers.jsonPatchOp"
                    )
                new = patch.json_patch(current, body)
            else:
                if not isinstance(body, dict):
                    raise bad_request(
                        "error decoding patch: json: cannot unmarshal array into Go value of type "
                        "map[string]interface {}"
                    )
                rv = (body.get("metadata") or {}).get("resourceVersion")
                if rv and rv != current["metadata"]["resourceVersion"]:
                    raise conflict(res, name)
                merge = patch.merge_patch if ctype == "application/merge-patch+json" else patch.strategic_merge_patch
                new = merge(current, body)
        except patch.PatchFailed:
            raise ApiError(
                422, "Invalid", "the server rejected our request due to an error in our request", {}
            ) from None
        return self._write(res, current, new, status=status, dry_run=dry_run)

    def _current(self, res: Resource, namespace: str, name: str) -> Obj:
        current = self.store.get(res, namespace if res.namespaced else "", name)
        if current is None:
            raise not_found(res, name)
        return current

    def _write(self, res: Resource, current: Obj, new: Obj, *, status: bool, dry_run: bool) -> tuple[int, Obj]:
        if status:
            result = copy.deepcopy(current)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
            if res.kind == "Pod":
                _derive_pod_status(result)
        else:
            result = self._merge_main(res, current, new)
        meta, old_meta = result["metadata"], current["metadata"]
        if old_meta.get("deletionTimestamp"):
            added = [f for f in meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])]
            if added:
                msg = (
                    f"Forbidden: no new finalizers can be added if the object is being deleted, found new "
                    f"finalizers []string{{{', '.join(chr(34) + f + chr(34) for f in added)}}}"
                )
                raise invalid(res, meta["name"], [("FieldValueForbidden", msg, "metadata.finalizers")] * 2)
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        if res.generation and self._spec_part(res, result) != self._spec_part(res, current):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if result == current or dry_run:
            return 200, self._out(res, result)
        if old_meta.get("deletionTimestamp") and not meta.get("finalizers") and res.kind != "Pod":
            self.store.commit(res, "DELETED", current, current)
            self.collect_garbage()
            return 200, self._out(res, result)
        if (
            res.kind == "Pod"
            and old_meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and old_meta.get("deletionGracePeriodSeconds") == 0
        ):
            self.store.commit(res, "DELETED", result, current)
            self.collect_garbage()
            return 200, self._out(res, result)
        return 200, self._out(res, self.store.commit(res, "MODIFIED", result, current))

    def _merge_main(self, res: Resource, current: Obj, new: Obj) -> Obj:
        result = copy.deepcopy(new)
        meta = result.setdefault("metadata", {})
        for f in SERVER_META:
            if f in current["metadata"]:
                meta[f] = copy.deepcopy(current["metadata"][f])
            else:
                meta.pop(f, None)
        result["apiVersion"], result["kind"] = current["apiVersion"], current["kind"]
        if res.status_subresource:
            if "status" in current:
                result["status"] = copy.deepcopy(current["status"])
            else:
                result.pop("status", None)
        if res.kind == "Pod":
            _check_pod_update(res, current, result)
        return result

    @staticmethod
    def _spec_part(res: Resource, obj: Obj) -> Obj:
        drop = ("metadata", "status") if res.status_subresource else ("metadata",)
        return _without(obj, *drop, "apiVersion", "kind")

    # --- delete -------------------------------------------------------------------------------
    def delete(
        self,
        res: Resource,
        namespace: str,
        name: str,
        grace: int | None,
        *,
        dry_run: bool,
        preconditions: dict[str, str] | None = None,
    ) -> tuple[int, Obj]:
        current = self._current(res, namespace, name)
        meta = current["metadata"]
        # The real API server's wording (storage's precondition check), which names the kind.
        for field, key, why in (
            ("uid", "UID", "deleted and then recreated"),
            ("resourceVersion", "ResourceVersion", "modified"),
        ):
            wanted = (preconditions or {}).get(field)
            if wanted and wanted != meta.get(field):
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {res.kind} "{name}": '
                    f"the {key} in the precondition ({wanted}) does not match the {key} in record "
                    f"({meta.get(field)}). The object might have been {why}",
                    details(res, name),
                )
        if res.kind == "Pod":
            return self._delete_pod(res, current, grace, dry_run=dry_run)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp") or dry_run:
                return 200, self._out(res, current)
            marked = copy.deepcopy(current)
            marked["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
            if res.generation:
                marked["metadata"]["generation"] = int(meta.get("generation", 1)) + 1
            return 200, self._out(res, self.store.commit(res, "MODIFIED", marked, current))
        if not dry_run:
            self.store.commit(res, "DELETED", current, current)
            if res.key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
                for served in from_crd(current):
                    self.store.unregister(served)
            self.collect_garbage()
        return 200, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details(res, name, uid=meta.get("uid", "")),
        }

    def _delete_pod(self, res: Resource, current: Obj, grace: int | None, *, dry_run: bool) -> tuple[int, Obj]:
        meta = current["metadata"]
        if grace is None:
            grace = int((current.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        if not (current.get("spec") or {}).get("nodeName"):
            grace = 0
        old_grace = meta.get("deletionGracePeriodSeconds")
        if old_grace is not None and grace >= old_grace:
            return 200, self._out(res, current)
        marked = copy.deepcopy(current)
        marked["metadata"].update(deletionTimestamp=now(grace), deletionGracePeriodSeconds=grace)
        if old_grace is None:
            marked["metadata"]["generation"] = int(meta.get("generation", 1)) + 1
        if dry_run:
            return 200, self._out(res, marked)
        stored = self.store.commit(res, "MODIFIED", marked, current)
        if grace == 0 and not meta.get("finalizers"):
            stored = self.store.commit(res, "DELETED", stored, stored)
            self.collect_garbage()
        return 200, self._out(res, stored)

    # --- garbage collection -------------------------------------------------------------------
    def collect_garbage(self) -> None:
        """kube-controller-manager's garbage collector, at once instead of a moment later: an object
        none of whose ownerReferences names an existing object (by uid) is deleted, background
        propagation, finalizers and a Pod's grace period honoured; deleting it may orphan more.
        """
        if self._collecting:
            return
        self._collecting = True
        try:
            while True:
                uids = {o["metadata"].get("uid") for o in self.store.objects.values()}
                orphans = [
                    (key, o)
                    for key, o in self.store.objects.items()
                    if (refs := o["metadata"].get("ownerReferences"))
                    and not o["metadata"].get("deletionTimestamp")
                    and not any(r.get("uid") in uids for r in refs)
                ]
                if not orphans:
                    return
                for (storage_key, namespace, name), _ in orphans:
                    res = self.store.resources.get(storage_key)
                    if res is not None:
                        self.delete(res, namespace, name, None, dry_run=False)
                    else:  # its kind is no longer served: the object went with it
                        self.store.objects.pop((storage_key, namespace, name), None)
        finally:
            self._collecting = False

    @staticmethod
    def _out(res: Resource, obj: Obj) -> Obj:
        if res.key == ("events.k8s.io", "v1", "events"):
            return events.to_events_v1(obj)
        return obj


def _derive_pod_status(pod: Obj) -> None:
    status = pod.get("status") or {}
    if status.get("podIP"):
        status["podIPs"] = [{"ip": status["podIP"]}]
    for cond in status.get("conditions") or []:
        cond.setdefault("lastProbeTime", None)
    for cs in status.get("containerStatuses") or []:
        cs.setdefault("lastState", {})


def _check_pod_update(res: Resource, current: Obj, result: Obj) -> None:
    """Pod specs are immutable except container images (what pod-failure changes)."""

    def strip(spec: Obj) -> Obj:
        out = copy.deepcopy(spec)
        for key in ("containers", "initContainers"):
            for c in out.get(key) or []:
                c.pop("image", None)
        return out

    if strip(current.get("spec") or {}) != strip(result.get("spec") or {}):
        name = current["metadata"]["name"]
        raise invalid(
            res,
            name,
            [
                (
                    "FieldValueForbidden",
                    "Forbidden: pod updates may not change fields other "
                    "than `spec.containers[*].image`, `spec.initContainers[*].image`",
                    "spec",
                )
            ],
        )


_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def _validate_pod(res: Resource, name: str, spec: Obj) -> None:
    """The part of the API server's Pod validation that a created Pod's author can get wrong:
    containers present, each with a DNS-1123 label name and an image; a known restartPolicy.
    """
    causes: list[tuple[str, str, str]] = []
    containers = spec.get("containers") or []
    if not containers:
        causes.append(("FieldValueRequired", "Required value", "spec.containers"))
    for i, c in enumerate(containers):
        cname = c.get("name") or ""
        if not cname:
            causes.append(("FieldValueRequired", "Required value", f"spec.containers[{i}].name"))
        elif not _LABEL.match(cname) or len(cname) > 63:
            causes.append(
                ("FieldValueInvalid", f'Invalid value: "{cname}": {_LABEL_MSG}', f"spec.containers[{i}].name")
            )
        if not c.get("image"):
            causes.append(("FieldValueRequired", "Required value", f"spec.containers[{i}].image"))
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in ("Always", "OnFailure", "Never"):
        causes.append(
            (
                "FieldValueNotSupported",
                f'Unsupported value: "{policy}": supported values: "Always", "OnFailure", "Never"',
                "spec.restartPolicy",
            )
        )
    if causes:
        raise invalid(res, name, causes)
