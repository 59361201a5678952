"""The dashboard's cluster-mode writes: create from YAML, pause, resume and delete through the
Kubernetes API with the person's own bearer token (never the dashboard's), and Events read the same
way; a missing token is refused before any request.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
import yaml
from kube.conftest import KubeEnv

from chaosbus.common.crd.meta import PAUSE_ANNOTATION
from chaosbus.dashboard import writes

PARTITION = """apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata: {name: dash-kube, namespace: NS}
spec: {action: partition, mode: all, direction: both, selector: {labelSelectors: {app: nothing}}}
"""


def _writer(kube: KubeEnv) -> tuple[writes.KubeWriter, str]:
    """As the dashboard would be set up for this API server, and the kubeconfig's token as a person's."""
    cfg = yaml.safe_load(kube.kubeconfig.read_text())
    user = cfg["users"][0]["user"]
    token = user.get("token")
    if not token:
        pytest.skip("this API server's kubeconfig authenticates with a client certificate, not a token")
    cluster = cfg["clusters"][0]["cluster"]
    ca = cluster.get("certificate-authority")
    if cluster.get("certificate-authority-data"):
        ca_file = kube.kubeconfig.with_name("dashboard-ca.crt")
        ca_file.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        ca = str(ca_file)
    if cluster.get("insecure-skip-tls-verify"):  # the session's own API server: its self-signed certificate
        served = kube.plane.root / "pki" / "apiserver.crt" if kube.plane is not None else None
        if served is None or not served.exists():
            pytest.skip("this API server's kubeconfig skips TLS verification; the dashboard never does")
        ca = str(served)
    return writes.KubeWriter(writes.KubeApi(cluster["server"], ca)), token


def test_writes_go_to_the_api_server_with_the_persons_token(kube: KubeEnv) -> None:
    writer, token = _writer(kube)
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/networkchaos/dash-kube"
    docs = writes.admitted(PARTITION.replace("NS", kube.namespace))

    async def scenario() -> None:
        assert await writer.create(docs, token) == [f"NetworkChaos/{kube.namespace}/dash-kube created"]
        obj = kube.client.get(path)
        assert obj is not None and obj["spec"]["direction"] == "both"
        await writer.set_paused(obj, True, token)
        assert (kube.client.get(path) or {})["metadata"]["annotations"][PAUSE_ANNOTATION] == "true"
        await writer.set_paused(obj, False, token)
        assert PAUSE_ANNOTATION not in ((kube.client.get(path) or {})["metadata"].get("annotations") or {})
        assert isinstance(await writer.events(token), list)
        await writer.delete("NetworkChaos", kube.namespace, "dash-kube", token)
        gone = kube.client.get(path)
        assert gone is None or gone["metadata"].get("deletionTimestamp")

    asyncio.run(scenario())


def test_without_a_token_nothing_is_sent(kube: KubeEnv) -> None:
    writer, _ = _writer(kube)
    docs = writes.admitted(PARTITION.replace("NS", kube.namespace))
    with pytest.raises(writes.WriteError, match="Kubernetes token"):
        asyncio.run(writer.create(docs, ""))
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{kube.namespace}/networkchaos/dash-kube"
    assert kube.client.get(path) is None


def test_a_refusal_by_the_api_server_is_shown_with_its_message(kube: KubeEnv) -> None:
    writer, token = _writer(kube)
    with pytest.raises(writes.WriteError, match="the API server said 404"):
        asyncio.run(writer.delete("NetworkChaos", kube.namespace, "never-there", token))
