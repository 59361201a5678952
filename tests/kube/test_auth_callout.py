"""Per-node NATS identities in cluster mode, for real: a kube-apiserver (the session's control
plane) issues bound ServiceAccount tokens (TokenRequest) to two node injector pods on two nodes,
and nats-server, configured as `chaosbus nats-secrets` configures it (nkey users plus the auth
callout), asks the real auth service about each connection; the service asks the API server
(TokenReview, the pod). Node A's token becomes node A's user: it consumes and publishes only as
A, never B's commands or results. A token for a deleted pod, for another audience, or of another
ServiceAccount gets no user at all. Real API server only: the fake has no TokenReview.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from helpers.callout import callout_server
from kube.client import KubeClient
from prometheus_client import CollectorRegistry

from chaosbus.authcallout import app, core
from chaosbus.common import bus as busmod
from chaosbus.common import kubeclient, natsauth, subjects, tcpnats

pytestmark = pytest.mark.integration
SA = "chaosbus-injector"


@dataclass
class Cluster:
    client: KubeClient
    kubeconfig: Path
    namespace: str
    nodes: tuple[str, str]


@pytest.fixture
def cluster(real_kube: Any) -> Iterator[Cluster]:
    """A namespace with the injectors' ServiceAccount, another account, two Nodes and a pod of
    each account on node A, one injector pod on node B (never started: a bound token only needs
    the pod object).
    """
    client = KubeClient(real_kube.kubeconfig)
    suffix = uuid.uuid4().hex[:6]
    ns, nodes = f"cb-auth-{suffix}", (f"node-a-{suffix}", f"node-b-{suffix}")
    client.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for sa in (SA, "someone-else"):
        client.create(
            f"/api/v1/namespaces/{ns}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}},
        )
    for node in nodes:
        client.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    for name, node, sa in (("inj-a", nodes[0], SA), ("inj-b", nodes[1], SA), ("other", nodes[0], "someone-else")):
        client.create(
            f"/api/v1/namespaces/{ns}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "nodeName": node,
                    "serviceAccountName": sa,
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "c", "image": "chaosbus"}],
                },
            },
        )
    try:
        yield Cluster(client, real_kube.kubeconfig, ns, nodes)
    finally:
        client.delete(f"/api/v1/namespaces/{ns}")
        for node in nodes:
            client.delete(f"/api/v1/nodes/{node}")


def token_for(c: Cluster, pod: str, *, audience: str = core.AUDIENCE, sa: str = SA) -> str:
    """What the kubelet puts in the injector's projected token volume: a TokenRequest bound to the pod."""
    obj = c.client.get(f"/api/v1/namespaces/{c.namespace}/pods/{pod}")
    assert obj is not None
    req = c.client.create(
        f"/api/v1/namespaces/{c.namespace}/serviceaccounts/{sa}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience],
                "expirationSeconds": 600,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": obj["metadata"]["uid"]},
            },
        },
    )
    token: str = req["status"]["token"]
    return token


@dataclass
class Nats:
    url: str
    state: Path
    registry: CollectorRegistry


@contextlib.asynccontextmanager
async def secured_nats(c: Cluster, tmp: Path) -> AsyncIterator[Nats]:
    """nats-server with the nkey users and the auth callout, the auth service answering it."""
    server, issuer = await callout_server(tmp, ("scheduler", "auth"))
    auth_bus = await connect(server.url, tmp, "auth")
    api = await kubeclient.api_client(str(c.kubeconfig))
    registry = CollectorRegistry()
    service = app.AuthService(
        app.Kube(api), core.Policy(namespace=c.namespace, service_account=SA), issuer_seed=issuer, registry=registry
    )
    await auth_bus.nc.subscribe(subjects.AUTH_CALLOUT.pattern, queue="auth", cb=service.on_request)
    try:
        yield Nats(server.url, tmp, registry)
    finally:
        await auth_bus.close()
        await api.close()
        server.stop()


async def connect(url: str, state: Path, user: str) -> busmod.Bus:
    return await busmod.connect(
        url, f"test-{user}", auth=natsauth.ClientAuth(natsauth.seed_file(user, state), admin=user == natsauth.ADMIN)
    )


async def injector(url: str, tmp: Path, token: str, node: str, errors: list[str]) -> nats.NATS:
    """A node injector's connection as app.Edge makes it: its projected token, its node's inbox."""
    path = tmp / f"token-{uuid.uuid4().hex[:6]}"
    path.write_text(token)
    opts = natsauth.ClientAuth(token_file=path, inbox=core.node_inbox(node)).connect_options()

    async def on_error(e: Exception) -> None:
        errors.append(str(e).lower())

    attempts: list[nats.NATS] = []
    try:
        # connect_timeout from the options: longer than nats-server's wait for the auth service
        return await tcpnats.open_client(
            url,
            attempts=attempts,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=on_error,
            name=f"injector-{node}",
            **opts,
        )
    except BaseException:
        for nc in attempts:
            with contextlib.suppress(Exception):
                await nc.close()  # a refused client leaves no reader task behind
        raise


def outcomes(n: Nats) -> dict[str, float]:
    return {
        o: n.registry.get_sample_value("chaosbus_auth_requests_total", {"outcome": o}) or 0.0
        for o in ("issued", "refused", "error")
    }


async def test_a_node_injector_gets_exactly_its_own_node(cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.nodes
    async with secured_nats(cluster, tmp_path) as n:
        scheduler = await connect(n.url, n.state, "scheduler")
        for node in (a, b):
            await scheduler.js.publish(subjects.command_subject(node), b"{}", headers={"Nats-Msg-Id": node})
        errors: list[str] = []
        nc = await injector(n.url, tmp_path, token_for(cluster, "inj-a"), a, errors)
        try:
            js = nc.jetstream()
            own = await js.pull_subscribe(
                subjects.command_subject(a), durable=subjects.injector_consumer(a), stream=subjects.COMMANDS.name
            )
            [msg] = await own.fetch(1, timeout=10)
            assert msg.subject == subjects.command_subject(a)
            await msg.ack_sync()
            await js.publish(subjects.result_subject(a, "exp"), b"{}", timeout=10)  # its own results go

            with pytest.raises((nats.errors.TimeoutError, nats.errors.Error)):  # B's durable consumer
                await js.pull_subscribe(
                    subjects.command_subject(b), durable=subjects.injector_consumer(b), stream=subjects.COMMANDS.name
                )
            with pytest.raises(nats.errors.TimeoutError):  # B's results
                await js.publish(subjects.result_subject(b, "exp"), b"{}", timeout=2)
            await nc.subscribe(subjects.command_subject(b))  # B's commands on the core subject
            await nc.subscribe(subjects.lease_subject(b))
            await nc.flush()
            await eventually(lambda: sum("permissions violation for subscription" in e for e in errors) >= 2)
            assert any(f'publish to "{subjects.result_subject(b, "exp")}"' in e for e in errors)
            info = await scheduler.js.stream_info(subjects.COMMANDS.name)
            assert info.state.messages == 1  # B's command is still there, untouched
        finally:
            await nc.close()
            await scheduler.close()
        assert outcomes(n)["issued"] == 1


async def test_tokens_of_a_deleted_pod_another_audience_or_account_get_no_user(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.nodes
    gone = token_for(cluster, "inj-b")
    cluster.client.delete(f"/api/v1/namespaces/{cluster.namespace}/pods/inj-b", gracePeriodSeconds="0")
    cluster.client.wait_for(
        lambda: cluster.client.get(f"/api/v1/namespaces/{cluster.namespace}/pods/inj-b") is None, what="inj-b deleted"
    )
    refused = [
        (gone, b),
        (token_for(cluster, "inj-a", audience="https://kubernetes.default.svc"), a),
        (token_for(cluster, "other", sa="someone-else"), a),
        ("not-a-token", a),
    ]
    async with secured_nats(cluster, tmp_path) as n:
        for token, node in refused:
            errors: list[str] = []
            with pytest.raises((nats.errors.Error, OSError)):
                nc = await injector(n.url, tmp_path, token, node, errors)
                await nc.close()
            assert any("authorization violation" in e for e in errors), errors
        # a decision nats-server waited more than 2 s for is asked again (bus.open_client)
        assert outcomes(n)["refused"] >= len(refused) and outcomes(n)["issued"] == 0


async def eventually(check: Any, within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.05)
