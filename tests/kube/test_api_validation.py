"""One corpus of invalid experiments, refused by local admission and by a real API server alike,
each naming the same field: the generated CRDs carry the rules (crd/apirules.py: enums, a required
`mode`, the `mode`/`value` pairing, Go durations, the Schedule's bounds) so no webhook is needed.
An experiment's spec is immutable on the API server (a CEL transition rule, as Chaos Mesh's webhook
makes it), while its metadata (the pause annotation, finalizers) stays writable.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kube.client import KubeError
from kube.conftest import KubeEnv

from chaosbus.common.admission import admit
from chaosbus.common.crd.errors import InvalidObject

pytestmark = pytest.mark.integration
Obj = dict[str, Any]
GROUP = "/apis/chaos-mesh.org/v1alpha1"
SELECTOR = {"labelSelectors": {"app": "web"}}
VALID: dict[str, Obj] = {
    "PodChaos": {"action": "pod-kill", "mode": "one", "selector": SELECTOR},
    "NetworkChaos": {
        "action": "partition",
        "mode": "all",
        "selector": SELECTOR,
        "direction": "to",
        "target": {"mode": "all", "selector": SELECTOR},
    },
    "Schedule": {
        "schedule": "@every 1h",
        "type": "PodChaos",
        "concurrencyPolicy": "Forbid",
        "historyLimit": 2,
        "podChaos": {"action": "pod-kill", "mode": "one", "selector": SELECTOR},
    },
}
# (kind, change to the valid spec: a value, or None to remove the key; the field both must name)
CORPUS: list[tuple[str, Obj, str]] = [
    ("PodChaos", {"action": "pod-explode"}, "spec.action"),
    ("PodChaos", {"action": None}, "spec.action"),
    ("PodChaos", {"mode": "some"}, "spec.mode"),
    ("PodChaos", {"mode": None}, "spec.mode"),
    ("PodChaos", {"mode": "fixed", "value": "0"}, "spec.value"),
    ("PodChaos", {"mode": "fixed", "value": "two"}, "spec.value"),
    ("PodChaos", {"mode": "fixed"}, "spec.value"),
    ("PodChaos", {"mode": "fixed-percent", "value": "150"}, "spec.value"),
    ("PodChaos", {"mode": "random-max-percent", "value": "-5"}, "spec.value"),
    ("PodChaos", {"duration": "10 minutes"}, "spec.duration"),
    ("PodChaos", {"duration": "-5s"}, "spec.duration"),
    ("PodChaos", {"duration": "1000000h"}, "spec.duration"),
    ("NetworkChaos", {"direction": "sideways"}, "spec.direction"),
    ("NetworkChaos", {"action": "teleport"}, "spec.action"),
    ("NetworkChaos", {"target": {"mode": "most", "selector": SELECTOR}}, "spec.target.mode"),
    ("NetworkChaos", {"target": {"mode": "fixed", "value": "0", "selector": SELECTOR}}, "spec.target.value"),
    ("Schedule", {"concurrencyPolicy": "Replace"}, "spec.concurrencyPolicy"),
    ("Schedule", {"historyLimit": 0}, "spec.historyLimit"),
]
IDS = [f"{kind}-{'-'.join(f'{k}={v}' for k, v in change.items())}" for kind, change, _ in CORPUS]


def document(kind: str, change: Obj, name: str = "bad") -> Obj:
    spec = copy.deepcopy(VALID[kind])
    for key, value in change.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "ns"},
        "spec": spec,
    }


def plural(kind: str) -> str:
    return kind.lower() if kind.endswith("Chaos") else kind.lower() + "s"


@pytest.mark.parametrize("kind", list(VALID))
def test_the_valid_documents_pass_local_admission(kind: str) -> None:
    admit(document(kind, {}))


@pytest.mark.parametrize(("kind", "change", "field"), CORPUS, ids=IDS)
def test_local_admission_refuses_naming_the_field(kind: str, change: Obj, field: str) -> None:
    with pytest.raises(InvalidObject) as err:
        admit(document(kind, change))
    assert any(e.startswith(f"{field}:") for e in err.value.errors), err.value.errors


def test_the_api_server_refuses_the_same_corpus_naming_the_same_fields(kube: KubeEnv) -> None:
    kube.need_real("the fake does not validate against the CRD schemas")
    base = f"{GROUP}/namespaces/{kube.namespace}"
    for kind in VALID:  # the corpus's baseline is accepted
        kube.client.create(
            f"{base}/{plural(kind)}",
            document(kind, {}, name=f"good-{kind.lower()}") | {"metadata": {"name": f"good-{kind.lower()}"}},
        )
    missed = []
    for i, (kind, change, field) in enumerate(CORPUS):
        doc = document(kind, change) | {"metadata": {"name": f"bad-{i}"}}
        try:
            kube.client.create(f"{base}/{plural(kind)}", doc)
        except KubeError as e:
            causes = {c.get("field") for c in e.body.get("details", {}).get("causes", [])}
            if e.status != 422 or field not in causes:
                missed.append((IDS[i], e.status, e.body.get("message")))
            continue
        missed.append((IDS[i], "accepted", ""))
    assert missed == []


def test_an_experiment_spec_is_immutable_on_the_api_server_and_its_metadata_is_not(kube: KubeEnv) -> None:
    kube.need_real("the fake does not evaluate CEL transition rules")
    path = f"{GROUP}/namespaces/{kube.namespace}/podchaos/kill-one"
    kube.client.create(
        f"{GROUP}/namespaces/{kube.namespace}/podchaos", document("PodChaos", {}) | {"metadata": {"name": "kill-one"}}
    )
    with pytest.raises(KubeError) as err:
        kube.client.merge_patch(path, {"spec": {"mode": "all"}})
    assert err.value.status == 422 and "immutable" in err.value.body["message"]
    assert {c.get("field") for c in err.value.body["details"]["causes"]} == {"spec"}
    paused = kube.client.merge_patch(path, {"metadata": {"annotations": {"experiment.chaos-mesh.org/pause": "true"}}})
    assert paused["spec"]["mode"] == "one" and paused["metadata"]["annotations"]
    schedule = f"{GROUP}/namespaces/{kube.namespace}/schedules"
    kube.client.create(schedule, document("Schedule", {}) | {"metadata": {"name": "edit-me"}})
    edited = kube.client.merge_patch(f"{schedule}/edit-me", {"spec": {"historyLimit": 5}})  # a Schedule may change
    assert edited["spec"]["historyLimit"] == 5
