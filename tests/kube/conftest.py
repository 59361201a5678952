"""The Kubernetes test suite's targets: every test runs twice, against the in-repo API fake and
against a real API server (the session's control plane from KUBEBUILDER_ASSETS, or the cluster
CHAOSBUS_TEST_KUBECONFIG names; skipped with the reason when there is none). Either way a test gets
a kubeconfig, a sync client, its own namespace and the chaos CRDs installed (on the real server also
deploy/k8s's admission policy). Tests that need the
fake's controls (compaction, its test kubelet) skip against a real server, saying so.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kube.client import KubeClient, KubeError
from kube.controlplane import ControlPlane
from kube.crds import install_admission_policy, install_crds
from kube.node import Node, running_node
from kube.node import missing as node_missing
from kubefake import FakeApiServer

_crds_installed: set[Path] = set()


@dataclass
class KubeEnv:
    kubeconfig: Path
    client: KubeClient
    namespace: str
    fake: FakeApiServer | None
    plane: ControlPlane | None = None  # the session's own control plane (restartable)

    def need_fake(self, why: str) -> FakeApiServer:
        if self.fake is None:
            pytest.skip(f"needs the API fake's controls ({why}); this run is on a real API server")
        return self.fake

    def need_real(self, why: str) -> None:
        if self.fake is not None:
            pytest.skip(f"needs a real API server ({why})")

    def need_plane(self, why: str) -> ControlPlane:
        if self.plane is None:
            pytest.skip(
                f"needs a control plane of the test's own ({why}); this run is on the fake or "
                "on the cluster CHAOSBUS_TEST_KUBECONFIG names"
            )
        return self.plane


@pytest.fixture(params=["fake", "real"])
def kube(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KubeEnv]:
    if request.param == "real":
        real = request.getfixturevalue("real_kube")
        yield from real_env(real.kubeconfig, real.plane)
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


def real_env(path: Path, plane: ControlPlane | None) -> Iterator[KubeEnv]:
    client = KubeClient(path)
    if path not in _crds_installed:  # once per session: the CRDs do not change under a run
        install_crds(client)
        install_admission_policy(client)  # every real-server test runs under it, as a deployment does
        _crds_installed.add(path)
    ns = f"cbt-{uuid.uuid4().hex[:8]}"
    client.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    if client.get(f"/api/v1/namespaces/{ns}/serviceaccounts/default") is None:
        with contextlib.suppress(KubeError):
            client.create(
                f"/api/v1/namespaces/{ns}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
            )
    try:
        yield KubeEnv(path, client, ns, None, plane)
    finally:
        _release_finalizers(client, ns)
        client.delete(f"/api/v1/namespaces/{ns}")


def _release_finalizers(client: KubeClient, namespace: str) -> None:
    from kube.crds import chaos_resources

    for plural in chaos_resources():
        items = (client.get(f"/apis/chaos-mesh.org/v1alpha1/namespaces/{namespace}/{plural}") or {}).get("items", [])
        for item in items:
            if item["metadata"].get("finalizers"):
                with contextlib.suppress(KubeError):
                    client.merge_patch(
                        f"/apis/chaos-mesh.org/v1alpha1/namespaces/{namespace}/{plural}/{item['metadata']['name']}",
                        {"metadata": {"finalizers": None}},
                    )


@pytest.fixture(scope="session")
def real_node(real_kube: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A real node (kubelet + containerd, tests/kube/node.py) on the session's control plane;
    skips, saying why, on an existing cluster, without root or without the runtime packages.
    """
    if real_kube.plane is None:
        pytest.skip(
            "the real-node tests start a kubelet on the session's own control plane "
            "(KUBEBUILDER_ASSETS), not on the cluster CHAOSBUS_TEST_KUBECONFIG names"
        )
    why = node_missing()
    if why is not None:
        pytest.skip(f"no real node: {why}")
    if not (real_kube.plane.bin_dir / "kubelet").exists() or not (real_kube.plane.bin_dir / "kube-scheduler").exists():
        pytest.skip(f"no real node: {real_kube.plane.bin_dir} lacks kubelet or kube-scheduler")
    with running_node(real_kube.plane, tmp_path_factory.mktemp("node")) as node:
        yield node
