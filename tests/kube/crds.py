"""Installs the chaos CRDs into the test API server (the generated ones in deploy/k8s/crds), and on a
real API server the admission policy deploy/k8s ships (the fake has no admission policies).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kube.client import KubeClient

CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "crds"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
POLICY_FILE = CRD_DIR.parent / "admission-policy.yaml"


def crd_documents() -> list[dict[str, Any]]:
    docs = [yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob("*.chaos-mesh.org.yaml"))]
    if docs:
        return docs
    from chaosbus.common.crd import CHAOS_KINDS

    return [_open_crd(kind) for kind in CHAOS_KINDS]


def _open_crd(kind: str) -> dict[str, Any]:
    plural = kind.lower()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.chaos-mesh.org"},
        "spec": {
            "group": "chaos-mesh.org",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": plural, "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }


def chaos_resources() -> list[str]:
    """Plurals of the namespaced chaos kinds."""
    return [d["spec"]["names"]["plural"] for d in crd_documents() if d["spec"]["scope"] == "Namespaced"]


def install_crds(client: KubeClient) -> None:
    """Create or replace every CRD, then wait until each serves its resource."""
    for doc in crd_documents():
        name = doc["metadata"]["name"]
        current = client.get(f"{CRD_PATH}/{name}")
        if current is None:
            client.create(CRD_PATH, doc)
        else:
            doc = {**doc, "metadata": {**doc["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
            client.request("PUT", f"{CRD_PATH}/{name}", doc)
    for doc in crd_documents():
        plural, deadline = doc["spec"]["names"]["plural"], time.monotonic() + 30
        while client.get(f"/apis/chaos-mesh.org/v1alpha1/{plural}") is None:
            assert time.monotonic() < deadline, f"CRD {plural} never became served"
            time.sleep(0.2)


def install_admission_policy(client: KubeClient) -> None:
    """Create or replace deploy/k8s's ValidatingAdmissionPolicy and its binding."""
    for doc in yaml.safe_load_all(POLICY_FILE.read_text()):
        plural = (
            "validatingadmissionpolicies"
            if doc["kind"] == "ValidatingAdmissionPolicy"
            else "validatingadmissionpolicybindings"
        )
        base = f"/apis/admissionregistration.k8s.io/v1/{plural}"
        current = client.get(f"{base}/{doc['metadata']['name']}")
        if current is None:
            client.create(base, doc)
        else:
            version = current["metadata"]["resourceVersion"]
            client.request(
                "PUT",
                f"{base}/{doc['metadata']['name']}",
                {**doc, "metadata": {**doc["metadata"], "resourceVersion": version}},
            )
