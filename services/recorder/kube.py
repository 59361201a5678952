"""The recorder's cluster edge: the object store and Event sink the one Recorder (app.py) is given
in cluster mode, writing to the Kubernetes API instead of the local KV store:

* status through the status subresource as a JSON merge patch (kubernetes-asyncio would send a
  dict as JSON patch unless told `application/merge-patch+json`), carrying the resourceVersion it
  was computed from, so a concurrent write gives 409 and the change is recomputed on the fresh
  object; kinds installed without the subresource (Chaos Mesh's own CRDs) get status through the
  main resource instead;
* the `chaos-mesh/records` finalizer (and annotations the scheduler decides) through the main
  resource, also guarded by resourceVersion;
* objects the scheduler decides (Schedule children): create (409 = already there), delete with a
  uid precondition and background propagation;
* a core/v1 Event per change worth telling (reasons as Chaos Mesh: Started, Applied, Recovered,
  Failed, TimeUp, Paused, Deleted), best effort.

Every request is asked again while the API does not answer (`common/kubepatience.py`: a refused or
reset connection, a timeout, 5xx, 429 with its Retry-After), so an API server restart delays the
writes and loses none; an answer that refuses a write (400, 403, 422) gives it up at once
(`store.Refused`), as 404 (the object is gone) and 409 (recomputed on the fresh object) are handled.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from chaosbus.common import kubeclient, settings
from chaosbus.common import logging as cblog
from chaosbus.common.crd import API_VERSION, plural_of
from chaosbus.common.kubepatience import REQUEST_TIMEOUT_S, until_answered
from chaosbus.common.store import Conflict, NotFound, Refused
from chaosbus.recorder import core
from chaosbus.recorder import events as kevents

log = cblog.get("recorder")
GROUP, VERSION = API_VERSION.split("/")
MERGE = "application/merge-patch+json"
# kubernetes-asyncio sends a dict as JSON patch unless told otherwise (its stubs omit the keyword).
AS_MERGE_PATCH: dict[str, Any] = {"_content_type": MERGE, "_request_timeout": REQUEST_TIMEOUT_S}
BOUNDED: dict[str, Any] = {"_request_timeout": REQUEST_TIMEOUT_S}
REFUSED = (400, 403, 422)  # the write itself is refused: asking again gets the same answer
COMPONENT = "chaosbus-recorder"
Obj = dict[str, Any]


def merge_diff(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns `old` into `new` (null for removed keys)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: Obj = {k: None for k in old if k not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_diff(old[key], value)
    return patch


class KubeStore:
    """The recorder's object store (`store.Objects`: get, create, delete, mutate) over the Kubernetes API."""

    def __init__(self, api: client.ApiClient, *, retries: int = 50) -> None:
        self.co = client.CustomObjectsApi(api)
        self.retries = retries
        self.no_status_subresource: set[str] = set()
        self.conflicts = 0

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        what = f"get {kind}/{namespace}/{name}"
        try:
            obj: Obj = await until_answered(
                lambda: self.co.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural_of(kind), name, **BOUNDED
                ),
                what,
            )
        except ApiException as e:
            if e.status == 404:
                return None
            if e.status in REFUSED:
                raise Refused(f"{what}: the API refused it ({e.status} {e.reason}): {_api_message(e)}") from None
            raise
        return obj

    async def create(self, obj: Obj) -> Obj:
        meta = obj.get("metadata") or {}
        what = f"{obj.get('kind')}/{meta.get('namespace')}/{meta.get('name')}"
        try:
            created: Obj = await until_answered(
                lambda: self.co.create_namespaced_custom_object(
                    GROUP, VERSION, str(meta.get("namespace")), plural_of(str(obj.get("kind"))), obj, **BOUNDED
                ),
                f"create {what}",
            )
        except ApiException as e:
            if e.status == 409:  # also a create whose answer was lost and is asked again
                raise Conflict(f"{what} already exists") from None
            if e.status in (*REFUSED, 404):  # refused for good (invalid, forbidden, no such kind or namespace)
                raise Refused(f"{what}: the API refused it ({e.status} {e.reason}): {_api_message(e)}") from None
            raise
        return created

    async def delete(self, kind: str, namespace: str, name: str, *, uid: str = "") -> str:
        """Background propagation: the API server's garbage collector removes what the object owns."""
        body = client.V1DeleteOptions(
            propagation_policy="Background", preconditions=client.V1Preconditions(uid=uid) if uid else None
        )
        try:
            result: Obj = await until_answered(
                lambda: self.co.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural_of(kind), name, body=body, **BOUNDED
                ),
                f"delete {kind}/{namespace}/{name}",
            )
        except ApiException as e:
            if e.status in (404, 409):  # gone (a delete asked again too), or a same-named successor
                return "notfound"
            if e.status in REFUSED:
                raise Refused(f"delete {kind}/{namespace}/{name}: {e.status} {e.reason}: {_api_message(e)}") from None
            raise
        return "deleting" if (result.get("metadata") or {}).get("deletionTimestamp") else "deleted"

    async def mutate(self, kind: str, namespace: str, name: str, fn: core.Mutation) -> Obj | None:
        for _ in range(self.retries):
            current = await self.get(kind, namespace, name)
            if current is None:
                raise NotFound(f"{kind}/{namespace}/{name}")
            new = fn(current)
            if new is None:
                return current
            try:
                return await self._write(kind, namespace, name, current, new)
            except ApiException as e:
                if e.status == 409:
                    self.conflicts += 1
                    continue
                if e.status == 404:
                    raise NotFound(f"{kind}/{namespace}/{name}") from None
                if e.status in REFUSED:
                    what = f"{kind}/{namespace}/{name}"
                    raise Refused(
                        f"{what}: the API refused the write ({e.status} {e.reason}): {_api_message(e)}"
                    ) from None
                raise
        raise Conflict(f"{kind}/{namespace}/{name}: still conflicting after {self.retries} attempts")

    async def _write(self, kind: str, namespace: str, name: str, current: Obj, new: Obj) -> Obj:
        plural, result = plural_of(kind), current
        if new.get("status") != current.get("status"):
            body = {
                "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                "status": merge_diff(current.get("status") or {}, new.get("status") or {}),
            }
            result = await self._patch_status(plural, namespace, name, body)
        old_meta, new_meta = current.get("metadata") or {}, new.get("metadata") or {}
        finalizers = new_meta.get("finalizers") or []
        changed: Obj = {}
        if finalizers != (old_meta.get("finalizers") or []):
            changed["finalizers"] = finalizers or None
        if (new_meta.get("annotations") or {}) != (old_meta.get("annotations") or {}):
            changed["annotations"] = merge_diff(old_meta.get("annotations") or {}, new_meta.get("annotations") or {})
        if changed:
            body = {"metadata": {"resourceVersion": result["metadata"]["resourceVersion"], **changed}}
            result = await until_answered(
                lambda: self.co.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name, body, **AS_MERGE_PATCH
                ),
                f"patch {plural}/{namespace}/{name}",
            )
        return result

    async def _patch_status(self, plural: str, namespace: str, name: str, body: Obj) -> Obj:
        if plural not in self.no_status_subresource:
            try:
                result: Obj = await until_answered(
                    lambda: self.co.patch_namespaced_custom_object_status(
                        GROUP, VERSION, namespace, plural, name, body, **AS_MERGE_PATCH
                    ),
                    f"patch {plural}/{namespace}/{name}/status",
                )
                return result
            except ApiException as e:
                # Without the subresource /status is 404 although the object exists (a Chaos Mesh
                # CRD); a missing object is 404 on the main resource too, and mutate reports it.
                if e.status != 404:
                    raise
                self.no_status_subresource.add(plural)
                log.info("no status subresource; writing status through the main resource", plural=plural)
        result = await until_answered(
            lambda: self.co.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, body, **AS_MERGE_PATCH
            ),
            f"patch {plural}/{namespace}/{name}",
        )
        return result


def _api_message(e: ApiException) -> str:
    try:
        return str(json.loads(e.body or "{}").get("message", ""))
    except (ValueError, AttributeError):
        return ""


class KubeEvents:
    """The recorder's Event sink in cluster mode: core/v1 Events about chaos objects, the way
    client-go's recorder writes them; the API server expires them, so nothing is forgotten or swept.
    """

    def __init__(self, api: client.ApiClient, instance: str) -> None:
        self.core, self.instance = client.CoreV1Api(api), instance
        self.written = 0

    async def record(self, obj: Obj, event: kevents.KubeEvent) -> None:
        meta = obj.get("metadata") or {}
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        body: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name')}.{int(now.timestamp() * 1e9):x}",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", API_VERSION),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": event.reason,
            "message": event.message,
            "type": event.type,
            "source": {"component": COMPONENT},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
        }
        try:
            await until_answered(
                lambda: self._create(str(meta.get("namespace")), body), f"event {event.reason} on {meta.get('name')}"
            )
            self.written += 1
        except ApiException as e:  # refused: an Event never blocks a status write
            if e.status == 409:  # asked again after an answer was lost: it was written
                self.written += 1
                return
            log.warning("event not written", reason=event.reason, status=e.status)

    async def _create(self, namespace: str, body: Any) -> None:
        """An HTTP status of 400 and above raised as ApiException, the body left unread."""
        resp: Any = await self.core.create_namespaced_event(
            namespace, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
        )
        try:
            if resp.status >= 400:
                e = ApiException(status=resp.status, reason=resp.reason)
                e.headers = resp.headers  # a Retry-After is honoured
                raise e
        finally:
            resp.release()

    async def forget(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """Kubernetes expires Events on its own (the API server's event TTL)."""

    async def sweep(self, gone: set[tuple[str, str]]) -> None:
        """Kubernetes expires Events on its own (the API server's event TTL)."""


@contextlib.asynccontextmanager
async def backends(kubeconfig: str | None) -> AsyncIterator[tuple[KubeStore, KubeEvents, client.ApiClient]]:
    """The object store and Event sink over one API client (in-cluster without a kubeconfig), and
    that client (what /readyz probes the API with)."""
    api = await kubeclient.api_client(kubeconfig)
    async with api:
        yield KubeStore(api), KubeEvents(api, settings.current().pod_name or socket.gethostname()), api
