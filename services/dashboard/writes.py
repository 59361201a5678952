"""How the dashboard changes things. Local mode: the direct triggers over NATS (`chaos.trigger.*`,
the same admission and halt checks as `chaosbus apply`). Cluster mode: the Kubernetes API with the
person's own token (the API server's RBAC decides, as for Chaos Mesh's dashboard). Either way, the
YAML is first checked here with admission's own messages, so an error names its field.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import msgspec

from chaosbus.common import admission, subjects
from chaosbus.common import bus as busmod
from chaosbus.common import messages as m
from chaosbus.common.crd import ALL_KINDS, InvalidObject, plural_of
from chaosbus.common.crd.meta import PAUSE_ANNOTATION
from chaosbus.common.crd.objects import load_yaml_documents

Obj = dict[str, Any]
REQUEST_TIMEOUT_S = 5.0


class WriteError(Exception):
    """A write refused or failed; `errors` as admission writes them (`field: message`)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def admitted(text: str) -> list[Obj]:
    """Every document of `text`, validated; all or nothing, errors naming document and field."""
    try:
        docs = load_yaml_documents(text)
    except InvalidObject as e:
        raise WriteError(list(e.errors)) from None
    out, errors = [], []
    for i, doc in enumerate(docs):
        try:
            out.append(admission.admit(doc))
        except InvalidObject as e:
            prefix = f"document {i + 1} " if len(docs) > 1 else ""
            errors += [
                f"{prefix}({doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}): {err}" if prefix else err
                for err in e.errors
            ]
    if errors:
        raise WriteError(errors)
    if not out:
        raise WriteError(["object: no document"])
    return out


def pause_patch(obj: Obj, paused: bool) -> Obj:
    """The object re-applied with the pause annotation set ("false" resumes: only "true" pauses)."""
    meta = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion", "chaos-mesh.org/v1alpha1"),
        "kind": obj.get("kind"),
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "annotations": {PAUSE_ANNOTATION: "true" if paused else "false"},
        },
        "spec": obj.get("spec") or {},
    }


class Writer(Protocol):
    async def create(self, docs: list[Obj], kube_token: str) -> list[str]: ...
    async def set_paused(self, obj: Obj, paused: bool, kube_token: str) -> str: ...
    async def delete(self, kind: str, namespace: str, name: str, kube_token: str) -> str: ...


class TriggerWriter:
    """Local mode: the scheduler's direct triggers (docs/triggers.md)."""

    def __init__(self, bus: Callable[[], busmod.Bus | None]) -> None:
        self.bus = bus  # the current connection (the dashboard reconnects on its own)

    async def _ask(self, entry: subjects.CoreSubject[Any], payload: bytes, reply: type[busmod.M]) -> busmod.M:
        bus = self.bus()
        if bus is None:
            raise WriteError(["not connected to NATS right now; try again in a moment"])
        try:
            msg = await bus.request(entry, payload, wait_s=REQUEST_TIMEOUT_S)
        except Exception as e:
            raise WriteError(
                [f"the scheduler did not answer ({type(e).__name__}); is it running and leading?"]
            ) from None
        decoded = msgspec.json.decode(msg.data)
        if isinstance(decoded, dict) and "error" in decoded:
            err = busmod.decode(msg.data, m.ErrorReply)
            raise WriteError([f"{err.field}: {err.error}" if err.field else err.error])
        return busmod.decode(msg.data, reply)

    async def create(self, docs: list[Obj], kube_token: str = "") -> list[str]:
        out = []
        for doc in docs:
            got = await self._ask(subjects.TRIGGER_APPLY, json.dumps(doc).encode(), m.TriggerApplied)
            out.append(f"{got.kind}/{got.namespace}/{got.name} {got.action}")
        return out

    async def set_paused(self, obj: Obj, paused: bool, kube_token: str = "") -> str:
        got = await self._ask(subjects.TRIGGER_APPLY, json.dumps(pause_patch(obj, paused)).encode(), m.TriggerApplied)
        return f"{got.kind}/{got.namespace}/{got.name} {'paused' if paused else 'resumed'}"

    async def delete(self, kind: str, namespace: str, name: str, kube_token: str = "") -> str:
        ref = m.TriggerRef(kind=kind, name=name, namespace=namespace)
        got = await self._ask(subjects.TRIGGER_RECOVER, busmod.encode(ref), m.TriggerRecovered)
        return f"{got.kind}/{got.namespace}/{got.name} {got.outcome}"


@dataclass(frozen=True)
class KubeApi:
    """Where the API server is (in a pod: its Service and the service account's CA)."""

    url: str
    ca_file: str | None = None

    def ssl(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True


def object_path(kind: str, namespace: str, name: str = "") -> str:
    k = ALL_KINDS.get(kind)
    if k is None:
        raise WriteError([f"kind: {kind!r} is not a chaos-mesh.org kind"])
    base = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{namespace}/{plural_of(kind)}"
    return f"{base}/{name}" if name else base


class KubeWriter:
    """Cluster mode: the person's token, never the dashboard's own (it has no write access)."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def _call(
        self, method: str, path: str, token: str, body: Obj | None = None, content_type: str = "application/json"
    ) -> Obj:
        if not token:
            raise WriteError(["log in with a Kubernetes token to change objects in cluster mode"])
        headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type, "Accept": "application/json"}
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(timeout=timeout) as s,
            s.request(
                method,
                self.api.url.rstrip("/") + path,
                headers=headers,
                ssl=self.api.ssl(),
                data=None if body is None else json.dumps(body),
            ) as r,
        ):
            data = await r.json(content_type=None) if r.content_length != 0 else {}
            if r.status >= 400:
                message = data.get("message") if isinstance(data, dict) else None
                raise WriteError([f"the API server said {r.status}: {message or r.reason}"])
            return data if isinstance(data, dict) else {}

    async def create(self, docs: list[Obj], kube_token: str) -> list[str]:
        out = []
        for doc in docs:
            meta = doc.get("metadata") or {}
            ns = str(meta.get("namespace") or "default")
            await self._call("POST", object_path(str(doc["kind"]), ns), kube_token, doc)
            out.append(f"{doc['kind']}/{ns}/{meta.get('name')} created")
        return out

    async def set_paused(self, obj: Obj, paused: bool, kube_token: str) -> str:
        meta = obj.get("metadata") or {}
        patch = {"metadata": {"annotations": {PAUSE_ANNOTATION: "true" if paused else None}}}
        await self._call(
            "PATCH",
            object_path(str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name"))),
            kube_token,
            patch,
            content_type="application/merge-patch+json",
        )
        return f"{obj.get('kind')}/{meta.get('namespace')}/{meta.get('name')} {'paused' if paused else 'resumed'}"

    async def delete(self, kind: str, namespace: str, name: str, kube_token: str) -> str:
        await self._call("DELETE", object_path(kind, namespace, name), kube_token)
        return f"{kind}/{namespace}/{name} deleting"

    async def events(self, kube_token: str) -> list[Obj]:
        data = await self._call("GET", "/api/v1/events?limit=500", kube_token)
        return [i for i in data.get("items") or [] if isinstance(i, dict)]
