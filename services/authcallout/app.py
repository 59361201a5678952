"""The auth service's edge: nats-server's authorization requests in (`$SYS.REQ.USER.AUTH`),
Kubernetes asked (TokenReview, the bound pod), a signed answer out. Each decision is counted in
`chaosbus_auth_requests_total{outcome}` and logged as one audit line (the node, the pod, why).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any, Protocol

from kubernetes_asyncio import client as kclient
from kubernetes_asyncio.client.exceptions import ApiException
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry, Counter

from chaosbus.authcallout import core
from chaosbus.common import kubeclient, kubehealth, natsjwt, service, settings, subjects
from chaosbus.common import logging as cblog

log = cblog.get("auth")
audit = cblog.get("audit")
KUBE_TIMEOUT_S = 1.5  # nats-server waits for the answer about as long as its auth timeout (2 s)


class Questions(Protocol):
    """The two questions the auth service asks about a token."""

    async def review(self, token: str, audience: str) -> dict[str, Any]: ...

    async def pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class Kube:
    """The two questions, asked of the API server."""

    def __init__(self, api: kclient.ApiClient) -> None:
        self.authn = kclient.AuthenticationV1Api(api)
        self.core = kclient.CoreV1Api(api)

    async def review(self, token: str, audience: str) -> dict[str, Any]:
        body: Any = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        }
        resp: Any = await self.authn.create_token_review(body, _preload_content=False, _request_timeout=KUBE_TIMEOUT_S)
        data = await _json(resp)
        status: dict[str, Any] = (data or {}).get("status") or {}
        return status

    async def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        resp: Any = await self.core.read_namespaced_pod(
            name, namespace, _preload_content=False, _request_timeout=KUBE_TIMEOUT_S
        )
        return None if resp.status == 404 else await _json(resp)


async def _json(resp: Any) -> dict[str, Any] | None:
    raw = await resp.read()
    if not 200 <= resp.status < 300:
        raise OSError(f"Kubernetes API answered {resp.status}: {raw[:300].decode(errors='replace')}")
    data: dict[str, Any] = json.loads(raw)
    return data


class AuthService:
    def __init__(self, kube: Questions, policy: core.Policy, *, issuer_seed: str, registry: CollectorRegistry) -> None:
        self.kube, self.policy, self.issuer_seed = kube, policy, issuer_seed
        from chaosbus.common import natsauth

        self.issuer = natsauth.public_key(issuer_seed)
        self.requests = Counter(
            "chaosbus_auth_requests_total",
            "Connections nats-server asked about, by outcome",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("issued", "refused", "error"):
            self.requests.labels(outcome)

    async def answer(self, data: bytes) -> bytes | None:
        """The signed answer to one request (None: not a request from nats-server, ignored)."""
        now = int(time.time())
        try:
            request = natsjwt.decode_request(data.decode(errors="replace"), now=now)
        except natsjwt.JwtError as e:
            log.warning("not an authorization request; ignored", error=str(e))
            return None
        who = {"client": request.nats.client_info.name, "host": request.nats.client_info.host}
        try:
            token = core.token_of(request)
            bound, pod = await self._review_and_pod(token)
            node = core.judge_pod(bound, pod, self.policy)
            if not core.node_is_valid(node):
                raise core.Refused(f"node name {node!r} cannot be a node injector's")
            user = core.user_jwt(
                request,
                node,
                issuer_seed=self.issuer_seed,
                issuer=self.issuer,
                now=now,
                expires=core.session_end(bound, now),
            )
        except core.Refused as e:
            self.requests.labels("refused").inc()
            audit.warning("nats user refused", audit=True, why=str(e), **who)
            return core.response(request, issuer_seed=self.issuer_seed, issuer=self.issuer, now=now, error=str(e))
        except (ApiException, OSError, TimeoutError, ValueError) as e:
            self.requests.labels("error").inc()
            log.error("cannot judge a connection: refused", error=str(e) or type(e).__name__, **who)
            return core.response(
                request,
                issuer_seed=self.issuer_seed,
                issuer=self.issuer,
                now=now,
                error="the auth service cannot reach the Kubernetes API",
            )
        self.requests.labels("issued").inc()
        audit.info(
            "nats user issued",
            audit=True,
            node=node,
            pod=f"{self.policy.namespace}/{bound.pod}",
            until=core.session_end(bound, now),
            **who,
        )
        return core.response(request, issuer_seed=self.issuer_seed, issuer=self.issuer, now=now, user=user)

    async def _review_and_pod(self, token: str) -> tuple[core.Bound, dict[str, Any] | None]:
        """The TokenReview and the bound pod, read at the same time: nats-server pings a client
        it has not answered within 2 s, which nats-py mistakes for its answer, so a decision
        should take one API round trip, not two.
        """
        claimed = core.claimed_pod(token)
        reading = asyncio.ensure_future(self.kube.pod(self.policy.namespace, claimed)) if claimed else None
        try:
            status = await self.kube.review(token, self.policy.audience)
            bound = core.judge_review(status, self.policy, core.token_expiry(token))
            if reading is not None and claimed == bound.pod:
                return bound, await reading
            return bound, await self.kube.pod(self.policy.namespace, bound.pod)
        finally:
            if reading is not None:
                reading.cancel()  # unused, or done: a read that failed is not reported twice
                with contextlib.suppress(BaseException):
                    await reading

    async def on_request(self, msg: Msg) -> None:
        out = await self.answer(msg.data)
        if out is not None and msg.reply:
            await msg.respond(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", default=None, help="kubeconfig (default: KUBECONFIG, else in-cluster)")
    p.add_argument(
        "--issuer-seed",
        default=None,
        help="file with the callout issuer's account nkey seed (env CHAOSBUS_AUTH_ISSUER_SEED_FILE)",
    )
    p.add_argument(
        "--injector-namespace",
        default=None,
        help="namespace of the node injectors' ServiceAccount and pods (default: POD_NAMESPACE, else chaosbus)",
    )
    p.add_argument("--injector-service-account", default="chaosbus-injector")
    p.add_argument("--audience", default=core.AUDIENCE, help="audience of the injectors' projected tokens")


def read_seed(path: str) -> str:
    """Read once at start, before anything is served."""
    return Path(path).read_text().strip()


async def main(args: argparse.Namespace) -> None:
    env = settings.current()
    args.issuer_seed = args.issuer_seed or env.auth_issuer_seed_file
    args.injector_namespace = args.injector_namespace or env.pod_namespace or "chaosbus"
    if not args.issuer_seed:
        raise SystemExit("chaosbus-auth: --issuer-seed (or CHAOSBUS_AUTH_ISSUER_SEED_FILE) is required")
    seed = read_seed(args.issuer_seed)
    registry = CollectorRegistry()
    policy = core.Policy(
        namespace=args.injector_namespace, service_account=args.injector_service_account, audience=args.audience
    )
    ready = service.Readiness()
    ready.pending("callout", "not yet answering authorization requests")
    async with service.connected(args, "chaosbus-auth", registry, ready) as (bus, port):
        api = await kubeclient.api_client(args.kubeconfig)
        async with api:
            auth = AuthService(Kube(api), policy, issuer_seed=seed, registry=registry)
            # A queue group: several replicas share the requests, each answered once.
            await bus.listen(subjects.AUTH_CALLOUT, auth.on_request, queue="auth")
            ready.done("callout")
            log.info("auth service ready", nats=args.nats, metrics_port=port, injectors=policy.username)
            # Ready only while the API answers: without it every connection would be refused.
            await service.run_forever(service.hold(bus), kubehealth.watch_api(api, ready))
