"""The auth service's core: what a TokenReview and the bound pod must say for a connection to
become a node's NATS user, and that the user JWT it issues carries exactly that node's
allow-lists, verifiably signed by the callout issuer (natsjwt, nkeys).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from chaosbus.authcallout import core
from chaosbus.common import natsauth, natsjwt, subjects

POLICY = core.Policy(namespace="chaosbus", service_account="chaosbus-injector")


def review(**overrides: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "authenticated": True,
        "audiences": [core.AUDIENCE],
        "user": {
            "username": POLICY.username,
            "extra": {core.POD_NAME: ["inj-1"], core.POD_UID: ["uid-1"], core.NODE_NAME: ["node-1"]},
        },
    }
    status.update(overrides)
    return status


def pod(**meta: Any) -> dict[str, Any]:
    return {"metadata": {"uid": "uid-1", **meta}, "spec": {"nodeName": "node-1"}}


def test_an_injector_token_bound_to_a_live_pod_names_its_node() -> None:
    bound = core.judge_review(review(), POLICY, 123)
    assert (bound.pod, bound.pod_uid, bound.node, bound.expires) == ("inj-1", "uid-1", "node-1", 123)
    assert core.judge_pod(bound, pod(), POLICY) == "node-1"


def test_without_a_node_claim_the_bound_pod_names_the_node() -> None:
    """API servers before 1.30 put no node name in a bound token's review."""
    unbound = review(user={"username": POLICY.username, "extra": {core.POD_NAME: ["inj-1"], core.POD_UID: ["uid-1"]}})
    bound = core.judge_review(unbound, POLICY, 0)
    assert bound.node == ""
    assert core.judge_pod(bound, pod(), POLICY) == "node-1"
    with pytest.raises(core.Refused, match="another pod"):
        core.judge_pod(bound, pod(uid="uid-2"), POLICY)


@pytest.mark.parametrize(
    ("status", "why"),
    [
        (review(authenticated=False, error="token expired"), "not authenticated"),
        (review(audiences=["https://kubernetes.default.svc"]), "audience"),
        (review(user={"username": "system:serviceaccount:chaosbus:default", "extra": {}}), "is not"),
        (review(user={"username": POLICY.username, "extra": {core.POD_NAME: ["p"]}}), "pod-uid"),
    ],
)
def test_a_token_that_is_not_a_live_injector_s_is_refused(status: dict[str, Any], why: str) -> None:
    with pytest.raises(core.Refused, match=why):
        core.judge_review(status, POLICY, 0)


@pytest.mark.parametrize(
    ("found", "why"),
    [
        (None, "no longer exists"),
        (pod(uid="uid-2"), "another pod"),
        ({"metadata": {"uid": "uid-1"}, "spec": {"nodeName": "node-2"}}, "runs on"),
        ({"metadata": {"uid": "uid-1"}, "spec": {}}, "not on a node"),
        (pod(deletionTimestamp="2026-01-01T00:00:00Z"), "being deleted"),
    ],
)
def test_the_bound_pod_must_still_be_there_on_that_node(found: dict[str, Any] | None, why: str) -> None:
    with pytest.raises(core.Refused, match=why):
        core.judge_pod(core.judge_review(review(), POLICY, 0), found, POLICY)


@pytest.mark.parametrize(
    ("node", "ok"),
    [
        ("node-1", True),
        ("ip-10-0-0-1.ec2.internal", True),
        (subjects.CLUSTER_NODE, False),
        ("*", False),
        ("a b", False),
        ("", False),
    ],
)
def test_only_a_kubernetes_node_name_can_become_a_node_user(node: str, ok: bool) -> None:
    assert core.node_is_valid(node) is ok


def test_the_issued_user_is_exactly_its_node_and_signed_by_the_issuer() -> None:
    issuer = natsauth.new_seed(account=True)
    user_key = natsauth.public_key(natsauth.new_seed())
    request = natsjwt.AuthorizationRequestClaims(
        iss="NSERVER",
        aud=natsjwt.REQUEST_AUDIENCE,
        nats=natsjwt.AuthorizationRequest(server_id=natsjwt.ServerId(id="NSERVERID"), user_nkey=user_key),
    )
    token = core.user_jwt(
        request, "node-1", issuer_seed=issuer, issuer=natsauth.public_key(issuer), now=100, expires=200
    )
    claims = natsjwt.decode(token, natsjwt.UserClaims, issuer_prefix="A")
    expected = natsauth.permissions("injector", node="node-1", inbox="_INBOX.injector-node-1")
    assert claims.sub == user_key and claims.exp == 200 and claims.name == "injector-node-1"
    assert (tuple(claims.nats.pub.allow), tuple(claims.nats.sub.allow)) == (expected.publish, expected.subscribe)
    assert subjects.command_subject("node-1") not in claims.nats.sub.allow  # commands come through its consumer
    assert not any("node-2" in s for s in claims.nats.pub.allow + claims.nats.sub.allow)

    answer = natsjwt.decode(
        core.response(request, issuer_seed=issuer, issuer=natsauth.public_key(issuer), now=100, user=token).decode(),
        natsjwt.AuthorizationResponseClaims,
        issuer_prefix="A",
    )
    assert (answer.sub, answer.aud, answer.nats.jwt, answer.nats.error) == (user_key, "NSERVERID", token, "")

    tampered = token.rsplit(".", 1)[0] + "." + base64.urlsafe_b64encode(b"x" * 64).decode().rstrip("=")
    with pytest.raises(natsjwt.JwtError, match="signature"):
        natsjwt.decode(tampered, natsjwt.UserClaims, issuer_prefix="A")


def test_a_session_ends_with_its_token_and_within_the_cap() -> None:
    assert core.session_end(core.Bound("p", "u", "n", expires=500), now=100) == 500
    assert core.session_end(core.Bound("p", "u", "n", expires=0), now=100) == 100 + core.MAX_SESSION_S
    payload = base64.urlsafe_b64encode(json.dumps({"exp": 1234}).encode()).decode().rstrip("=")
    assert core.token_expiry(f"h.{payload}.s") == 1234 and core.token_expiry("garbage") == 0


def test_the_claimed_pod_is_read_from_a_bound_token_and_nothing_else() -> None:
    def token(claims: object) -> str:
        return "h." + base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=") + ".s"

    assert core.claimed_pod(token({"kubernetes.io": {"pod": {"name": "inj-a", "uid": "u"}}})) == "inj-a"
    for claims in ({"kubernetes.io": {}}, {"kubernetes.io": {"pod": "inj-a"}}, {"kubernetes.io": {"pod": {"name": 7}}}):
        assert core.claimed_pod(token(claims)) == ""
    assert core.claimed_pod(token({"kubernetes.io": {"pod": {"name": "x" * 300}}})) == ""
    assert core.claimed_pod("garbage") == ""
