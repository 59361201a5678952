"""The auth service's pure core: from what Kubernetes said about a node injector's token to the
NATS user nats-server will let it be.

A node injector connects with its projected ServiceAccount token (audience `chaosbus-nats`,
short-lived, bound to its pod). The edge asks the API server (TokenReview) who holds that token
and whether the pod it is bound to still exists on the node the token names; `judge` turns those
answers into a node name or a refusal, and `issue` into a user JWT whose permissions are exactly
that node's, generated from the subject table like every other identity's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from chaosbus.common import natsauth, natsjwt, subjects

AUDIENCE = "chaosbus-nats"  # the audience a node injector's projected token is requested for
MAX_SESSION_S = 3600  # an issued user expires with its token, and at the latest after this
EXTRA = "authentication.kubernetes.io/"  # the keys the API server puts in a bound token's `extra`
POD_NAME, POD_UID, NODE_NAME = EXTRA + "pod-name", EXTRA + "pod-uid", EXTRA + "node-name"


@dataclass(frozen=True)
class Policy:
    """Who may be a node injector: the DaemonSet's ServiceAccount, in chaosbus's namespace."""

    namespace: str = "chaosbus"
    service_account: str = "chaosbus-injector"
    audience: str = AUDIENCE

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


@dataclass(frozen=True)
class Bound:
    """A token the API server vouched for, and the pod and node it is bound to."""

    pod: str
    pod_uid: str
    node: str  # empty where the API server does not say (before Kubernetes 1.30): the pod says
    expires: int  # the token's own expiry (seconds since 1970), 0 when unknown


class Refused(Exception):
    """Why a connection gets no NATS user (sent to nats-server, which logs it and closes it)."""


def judge_review(status: dict[str, Any], policy: Policy, token_exp: int) -> Bound:
    """A TokenReview's status -> the pod (and node) the token is bound to; Refused unless the
    API server authenticated it for our audience as the injectors' ServiceAccount, bound to a pod.
    API servers before 1.30 (the ServiceAccountTokenPodNodeInfo feature) name no node; the bound
    pod's own `nodeName` decides then (`judge_pod`).
    """
    if not status.get("authenticated"):
        raise Refused(f"token not authenticated: {status.get('error') or 'no reason given'}")
    if policy.audience not in (status.get("audiences") or []):
        raise Refused(f"token not valid for audience {policy.audience}")
    user = status.get("user") or {}
    if user.get("username") != policy.username:
        raise Refused(f"{user.get('username')!r} is not {policy.username}")
    extra = user.get("extra") or {}
    values = {k: (extra.get(k) or [""])[0] for k in (POD_NAME, POD_UID, NODE_NAME)}
    missing = [k.removeprefix(EXTRA) for k in (POD_NAME, POD_UID) if not values[k]]
    if missing:
        raise Refused(f"token not bound to a pod (no {', '.join(missing)})")
    return Bound(pod=values[POD_NAME], pod_uid=values[POD_UID], node=values[NODE_NAME], expires=token_exp)


def judge_pod(bound: Bound, pod: dict[str, Any] | None, policy: Policy) -> str:
    """The node the token's pod runs on; Refused unless that pod still exists, is the same pod
    (uid), is scheduled, runs on the token's node where the token names one, and is not being
    deleted. The API server already refuses a deleted pod's token; this also covers a pod being
    deleted and the node-name claim against what the pod says.
    """
    if pod is None:
        raise Refused(f"pod {policy.namespace}/{bound.pod} no longer exists")
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if meta.get("uid") != bound.pod_uid:
        raise Refused(f"pod {policy.namespace}/{bound.pod} is another pod now (uid {meta.get('uid')})")
    node = spec.get("nodeName")
    if not isinstance(node, str) or not node:
        raise Refused(f"pod {policy.namespace}/{bound.pod} is not on a node")
    if bound.node and node != bound.node:
        raise Refused(f"pod {policy.namespace}/{bound.pod} runs on {node!r}, not {bound.node!r}")
    if meta.get("deletionTimestamp"):
        raise Refused(f"pod {policy.namespace}/{bound.pod} is being deleted")
    return node


def _unverified_claims(token: str) -> dict[str, Any]:
    try:
        import base64

        part = token.split(".")[1]
        return msgspec.json.decode(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)), type=dict[str, Any])
    except (IndexError, ValueError, msgspec.DecodeError):
        return {}


def token_expiry(token: str) -> int:
    """The `exp` of a ServiceAccount token, read without checking it (the TokenReview does):
    only to end the NATS session no later than the token.
    """
    exp = _unverified_claims(token).get("exp")
    return int(exp) if isinstance(exp, int | float) else 0


def claimed_pod(token: str) -> str:
    """The pod a ServiceAccount token says it is bound to, read without checking it: only to ask
    for that pod while the TokenReview is under way; the decision uses the reviewed name.
    """
    k8s = _unverified_claims(token).get("kubernetes.io")
    pod = k8s.get("pod") if isinstance(k8s, dict) else None
    name = pod.get("name") if isinstance(pod, dict) else None
    return name if isinstance(name, str) and 0 < len(name) <= 253 else ""


def node_permissions(node: str) -> natsauth.Permissions:
    """Exactly what node `node`'s injector may do: the subject table's injector grants for that
    node, with its reply subjects under its own user name (it cannot know the user key
    nats-server makes for its connection).
    """
    return natsauth.permissions("injector", node=node, inbox=node_inbox(node))


def node_inbox(node: str) -> str:
    return natsauth.inbox_prefix(natsauth.user_name("injector", node))


def user_jwt(
    request: natsjwt.AuthorizationRequestClaims, node: str, *, issuer_seed: str, issuer: str, now: int, expires: int
) -> str:
    """The user nats-server makes this connection into: the request's user nkey, named after the
    node, allowed exactly its node's subjects, until `expires`.
    """
    perms = node_permissions(node)
    if not perms.publish or not perms.subscribe:  # an empty allow-list would mean "everything"
        raise Refused(f"no permissions for node {node!r}")
    claims = natsjwt.UserClaims(
        iat=now,
        iss=issuer,
        name=natsauth.user_name("injector", node),
        sub=request.nats.user_nkey,
        exp=expires,
        nats=natsjwt.UserPermissions(
            pub=natsjwt.Allow(allow=list(perms.publish)), sub=natsjwt.Allow(allow=list(perms.subscribe))
        ),
    )
    return natsjwt.encode(claims, issuer_seed)


def session_end(bound: Bound, now: int) -> int:
    end = now + MAX_SESSION_S
    return min(end, bound.expires) if bound.expires else end


def response(
    request: natsjwt.AuthorizationRequestClaims,
    *,
    issuer_seed: str,
    issuer: str,
    now: int,
    user: str = "",
    error: str = "",
) -> bytes:
    """The signed answer to nats-server: a user JWT, or an error (the connection is refused)."""
    claims = natsjwt.AuthorizationResponseClaims(
        iat=now,
        iss=issuer,
        sub=request.nats.user_nkey,
        aud=request.nats.server_id.id,
        exp=now + 60,
        nats=natsjwt.AuthorizationResponse(jwt=user, error="" if user else (error or "refused")),
    )
    return natsjwt.encode(claims, issuer_seed).encode()


def token_of(request: natsjwt.AuthorizationRequestClaims) -> str:
    token = request.nats.connect_opts.auth_token.strip()
    if not token:
        raise Refused("no token in the connect request")
    if len(token) > 16384:
        raise Refused("token too long")
    return token


def node_is_valid(node: str) -> bool:
    """A Kubernetes node name whose subject token is itself (the subject table's injector grants
    are per token; `_cluster` and anything with a wildcard never pass).
    """
    return bool(node) and node[0].isalnum() and subjects.token(node) == node.replace(".", "_") and node != "*"
