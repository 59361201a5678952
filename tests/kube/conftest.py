"""The Kubernetes test suite's target: the in-repo API fake always, or the real API server named by
CHAOSBUS_TEST_KUBECONFIG. Either way a test gets a kubeconfig, a sync client, its own namespace
and the chaos CRDs installed. Tests that need the fake's controls (restart, compaction) skip
against a real server, saying so.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kube.client import KubeClient, KubeError
from kube.crds import install_crds
from kubefake import FakeApiServer

REAL = os.environ.get("CHAOSBUS_TEST_KUBECONFIG", "")


@dataclass
class KubeEnv:
    kubeconfig: Path
    client: KubeClient
    namespace: str
    fake: FakeApiServer | None

    def need_fake(self, why: str) -> FakeApiServer:
        if self.fake is None:
            pytest.skip(f"needs the API fake's controls ({why}); CHAOSBUS_TEST_KUBECONFIG names a real server")
        return self.fake


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeEnv]:
    if REAL:
        path = Path(REAL)
        client = KubeClient(path)
        ns = f"cbt-{uuid.uuid4().hex[:8]}"
        install_crds(client)
        client.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        if client.get(f"/api/v1/namespaces/{ns}/serviceaccounts/default") is None:
            with contextlib.suppress(KubeError):
                client.create(f"/api/v1/namespaces/{ns}/serviceaccounts",
                              {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
        try:
            yield KubeEnv(path, client, ns, None)
        finally:
            _release_finalizers(client, ns)
            client.delete(f"/api/v1/namespaces/{ns}")
        return
    fake = FakeApiServer(bookmark_interval=0.5).start()
    try:
        path = fake.write_kubeconfig(tmp_path / "kubeconfig")
        client = KubeClient(path)
        install_crds(client)
        ns = "chaos-test"
        client.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        yield KubeEnv(path, client, ns, fake)
    finally:
        fake.close()


def _release_finalizers(client: KubeClient, namespace: str) -> None:
    from kube.crds import chaos_resources

    for plural in chaos_resources():
        items = (client.get(f"/apis/chaos-mesh.org/v1alpha1/namespaces/{namespace}/{plural}") or {}).get("items", [])
        for item in items:
            if item["metadata"].get("finalizers"):
                with contextlib.suppress(KubeError):
                    client.merge_patch(f"/apis/chaos-mesh.org/v1alpha1/namespaces/{namespace}/{plural}/"
                                       f"{item['metadata']['name']}", {"metadata": {"finalizers": None}})
