"""`chaosbus template statuscheck`: Chaos Mesh's StatusCheck templates (ConfigMaps, see
crd/sctemplates.py) in local mode's store: list, show, create, delete, and run one as a new
StatusCheck, as Chaos Mesh's dashboard does. `create -o yaml` prints the ConfigMap instead, for
`kubectl apply` in cluster mode.
"""

from __future__ import annotations

from typing import Any

from chaosbus.cli import render
from chaosbus.cli.resources import UsageError, read_source
from chaosbus.common import admission
from chaosbus.common.crd import InvalidObject, sctemplates
from chaosbus.common.crd.objects import load_yaml_documents
from chaosbus.common.store import Conflict, ObjectStore

Obj = dict[str, Any]


def spec_from_file(path: str) -> Obj:
    """A StatusCheck spec from a file holding either the spec itself or a whole StatusCheck."""
    docs = load_yaml_documents(read_source(path))
    if len(docs) != 1:
        raise UsageError(f"{path}: expected one YAML document (a StatusCheck or its spec), got {len(docs)}")
    doc = docs[0]
    if doc.get("kind") == "StatusCheck":
        spec = doc.get("spec")
        if not isinstance(spec, dict):
            raise InvalidObject(["spec: required, the StatusCheck's spec"])
        return spec
    return doc


def new_configmap(namespace: str, name: str, path: str, description: str) -> Obj:
    return admission.admit(sctemplates.configmap(namespace, name, spec_from_file(path), description))


async def create(store: ObjectStore, cm: Obj) -> str:
    try:
        await store.create(cm)
    except Conflict:
        raise UsageError(
            f'statuscheck template "{cm["metadata"]["annotations"][sctemplates.NAME_ANNOTATION]}" already exists'
        ) from None
    return f"statuscheck template/{cm['metadata']['annotations'][sctemplates.NAME_ANNOTATION]} created"


async def all_templates(store: ObjectStore, namespace: str | None) -> tuple[list[sctemplates.Template], list[str]]:
    """Every template in the namespace (all with None), and a line for each ConfigMap that is not one."""
    found, bad = [], []
    for cm in await store.list("ConfigMap", namespace):
        try:
            found.append(sctemplates.read(cm))
        except InvalidObject as e:
            bad.append(f"configmap/{cm['metadata'].get('name')}: skipped: {'; '.join(e.errors)}")
    return sorted(found, key=lambda t: (t.namespace, t.name)), bad


async def listing(store: ObjectStore, namespace: str | None) -> str:
    found, bad = await all_templates(store, namespace)
    if not found:
        return "\n".join(["No resources found.", *bad])
    rows = [[t.namespace, t.name, t.description, render.age(t.created)] for t in found]
    return "\n".join([render.table(rows, ["NAMESPACE", "NAME", "DESCRIPTION", "AGE"]), *bad])


async def one(store: ObjectStore, namespace: str, name: str) -> sctemplates.Template:
    cm = await store.get("ConfigMap", namespace, sctemplates.configmap_name(name))
    if cm is None:
        raise UsageError(f'statuscheck template "{name}" not found in namespace {namespace}')
    return sctemplates.read(cm)


def show(template: sctemplates.Template, output: str | None) -> str:
    detail = {
        "namespace": template.namespace,
        "name": template.name,
        "description": template.description,
        "uid": template.uid,
        "created": template.created,
        "spec": template.spec,
    }
    if output == "json":
        return render.to_json([detail])
    return render.to_yaml([detail])


async def delete(store: ObjectStore, namespace: str, name: str) -> str:
    await one(store, namespace, name)  # only a template: never some other ConfigMap
    await store.delete("ConfigMap", namespace, sctemplates.configmap_name(name))
    return f'statuscheck template "{name}" deleted'


async def run(store: ObjectStore, namespace: str, name: str, check_name: str) -> str:
    """A new StatusCheck from the template, admitted like any applied object."""
    check = admission.admit(sctemplates.statuscheck(await one(store, namespace, name), check_name))
    try:
        await store.create(check)
    except Conflict:
        raise UsageError(f'statuscheck "{check_name}" already exists') from None
    return f"statuscheck.chaos-mesh.org/{check_name} created from template {name}"
