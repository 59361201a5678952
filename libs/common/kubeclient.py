"""The one way a chaosbus process opens the Kubernetes API: a kubeconfig when given, else the
pod's service account. Only the kube edges (watcher, recorder, cluster injector) call it.
"""

from __future__ import annotations

from kubernetes_asyncio import client, config

from chaosbus.common import settings


async def api_client(kubeconfig: str | None) -> client.ApiClient:
    """From --kubeconfig (or KUBECONFIG), else the in-cluster service account."""
    path = kubeconfig or settings.current().kubeconfig
    if path:
        return await config.new_client_from_config(config_file=path)
    cfg = client.Configuration()
    config.load_incluster_config(client_configuration=cfg)
    return client.ApiClient(configuration=cfg)
