"""kubectl-like verbs on the local object store: apply, get, describe, delete, annotate."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from chaosbus.cli import render
from chaosbus.common import admission
from chaosbus.common import objects as o
from chaosbus.common.crd import ALL_KINDS, CHAOS_KINDS, InvalidObject, bounds
from chaosbus.common.crd.objects import load_yaml_documents
from chaosbus.common.store import NotFound, ObjectStore

Obj = dict[str, Any]


class UsageError(Exception):
    """A bad request from the user: printed as `error: ...`, exit code 1."""


def read_source(path: str) -> str:
    """The file (or stdin) as text, read no further than admission accepts (bounds.MAX_DOCUMENT_BYTES)."""
    limit = bounds.MAX_DOCUMENT_BYTES + 1  # one more: load_yaml then refuses it, naming the cap
    try:
        if path == "-":
            return sys.stdin.buffer.read(limit).decode("utf-8")
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"cannot read {path}: not UTF-8 text (byte {e.start})") from None


def prepare(text: str, namespace: str | None) -> list[Obj]:
    """Decode and validate every document before anything is written: all or nothing."""
    out = []
    for i, doc in enumerate(load_yaml_documents(text)):
        try:
            out.append(admission.admit(doc, namespace))
        except InvalidObject as e:
            kind, name = doc.get("kind"), bounds.name_of(doc)
            raise InvalidObject([f"document {i + 1} ({kind}/{name}): {err}" for err in e.errors]) from None
    return out


async def apply(store: ObjectStore, text: str, namespace: str | None) -> list[str]:
    return await store_admitted(store, prepare(text, namespace))


async def store_admitted(store: ObjectStore, admitted: list[Obj]) -> list[str]:
    """Store the documents `prepare` admitted (each is admitted once, before anything is written)."""
    lines = []
    for obj in admitted:
        stored, action = await store.apply_admitted(obj)
        lines.append(f"{_ref(stored)} {action}")
    return lines


def _ref(obj: Obj) -> str:
    kind = str(obj.get("kind"))
    group = ".chaos-mesh.org" if kind in ALL_KINDS else ""
    return f"{kind.lower()}{group}/{obj['metadata']['name']}"


def kind_of(text: str) -> str:
    kind = o.canonical_kind(text)
    if kind is None:
        known = ", ".join(o.known_names())
        raise UsageError(f'the server doesn\'t have a resource type "{text}" (known: {known})')
    return kind


async def fetch(store: ObjectStore, kind: str, name: str | None, namespace: str | None) -> list[Obj]:
    ns = "" if kind in o.CLUSTER_SCOPED else namespace
    if name:
        obj = await store.get(kind, ns or "default" if kind not in o.CLUSTER_SCOPED else "", name)
        if obj is None:
            raise UsageError(f'{kind.lower()} "{name}" not found')
        return [obj]
    return await store.list(kind, ns or None)


async def describe(store: ObjectStore, kind: str, name: str, namespace: str) -> str:
    """`describe` text with the object's Events (local mode keeps them in the store, by involved uid)."""
    obj = (await fetch(store, kind, name, namespace))[0]
    meta = obj.get("metadata") or {}
    events = (
        []
        if kind in o.CLUSTER_SCOPED
        else [
            e
            for e in await store.list("Event", str(meta.get("namespace") or namespace))
            if (e.get("involvedObject") or {}).get("uid") == meta.get("uid")
        ]
    )
    return render.describe(obj, events)


def show(objs: list[Obj], kind: str, output: str | None) -> str:
    if output == "json":
        return render.to_json(objs)
    if output == "yaml":
        return render.to_yaml(objs)
    if output:
        raise UsageError(f"unknown output format {output!r}: expected json or yaml")
    if not objs:
        return "No resources found."
    if kind == "Pod":
        return render.pod_rows(objs)
    if kind in CHAOS_KINDS:
        return render.chaos_rows(objs)
    if kind == "Schedule":
        return render.schedule_rows(objs)
    rows = [[ob["metadata"]["name"], render.age(ob["metadata"].get("creationTimestamp", ""))] for ob in objs]
    return render.table(rows, ["NAME", "AGE"])


async def delete(store: ObjectStore, kind: str, name: str, namespace: str, *, wait: float) -> str:
    ns = "" if kind in o.CLUSTER_SCOPED else namespace
    outcome = await store.delete(kind, ns, name)
    if outcome == "notfound":
        raise UsageError(f'{kind.lower()} "{name}" not found')
    deadline = time.monotonic() + wait
    while outcome == "deleting" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if await store.get(kind, ns, name) is None:
            outcome = "deleted"
    if outcome == "deleting":
        return f'{kind.lower()} "{name}" is being deleted (waiting for recovery; finalizer chaos-mesh/records)'
    return f'{kind.lower()} "{name}" deleted'


def parse_annotations(pairs: list[str]) -> dict[str, str | None]:
    changes: dict[str, str | None] = {}
    for p in pairs:
        if p.endswith("-") and "=" not in p:
            changes[p[:-1]] = None
        elif "=" in p:
            k, v = p.split("=", 1)
            if not k:
                raise UsageError(f"invalid annotation {p!r}")
            changes[k] = v
        else:
            raise UsageError(f"invalid annotation {p!r}: expected key=value or key-")
    return changes


async def annotate(
    store: ObjectStore, kind: str, name: str, namespace: str, pairs: list[str], *, overwrite: bool
) -> str:
    changes = parse_annotations(pairs)
    ns = "" if kind in o.CLUSTER_SCOPED else namespace

    def mutate(obj: Obj) -> Obj | None:
        existing = (obj.get("metadata") or {}).get("annotations") or {}
        clash = [k for k, v in changes.items() if v is not None and k in existing and existing[k] != v]
        if clash and not overwrite:
            raise UsageError(
                f"--overwrite is false but found the following declared annotation(s): "
                f"'{', '.join(clash)}' already has a value"
            )
        return o.set_annotations(obj, changes)

    try:
        await store.mutate(kind, ns, name, mutate)
    except NotFound:
        raise UsageError(f'{kind.lower()} "{name}" not found') from None
    return f"{kind.lower()}/{name} annotated"
