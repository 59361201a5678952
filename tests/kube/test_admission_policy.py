"""deploy/k8s's ValidatingAdmissionPolicy on a real API server: the creator of an experiment must be
allowed to create it in every namespace it selects (Chaos Mesh's /validate-auth, without a webhook).
A user whose RBAC reaches only team-a cannot aim a PodChaos, a Schedule's NetworkChaos target, a
Workflow template or an explicit pod list at kube-system; the same user may target team-a, and
someone allowed in both namespaces may cross them. Writes that leave the spec alone (the recorder's
finalizers) need no such right; a spec change (a Schedule's: an experiment's spec is immutable) does.
The fake has no admission policies, so these run only on a real server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kube.client import KubeClient, KubeError
from kube.conftest import KubeEnv, real_env

pytestmark = pytest.mark.integration
GROUP = "/apis/chaos-mesh.org/v1alpha1"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
Obj = dict[str, Any]


@dataclass
class Tenants:
    admin: KubeClient
    team_a: str
    team_b: str
    alice: KubeClient  # RBAC on chaos objects in team-a only
    bob: KubeClient  # RBAC in team-a and team-b
    recorder: KubeClient  # patch (finalizers) on podchaos everywhere, create nowhere


@pytest.fixture(scope="module")
def tenants(real_kube: Any) -> Iterator[Tenants]:
    """One set of namespaces, roles and users for the module (the tests use distinct object names):
    installing them and waiting for the API server to load the policy takes most of a test's time.
    The fake has no ValidatingAdmissionPolicy, so this runs only on a real server.
    """
    env = real_env(real_kube.kubeconfig, real_kube.plane)
    kube = next(env)
    try:
        yield from _tenants(kube)
    finally:
        env.close()


def _tenants(kube: KubeEnv) -> Iterator[Tenants]:
    admin, tag = kube.client, uuid.uuid4().hex[:6]
    team_a, team_b = f"team-a-{tag}", f"team-b-{tag}"
    editor, patcher = f"cbt-chaos-editor-{tag}", f"cbt-chaos-patcher-{tag}"
    for ns in (team_a, team_b):
        admin.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    admin.create(f"{RBAC}/clusterroles", role(editor, ["get", "list", "create", "update", "patch", "delete"]))
    admin.create(f"{RBAC}/clusterroles", role(patcher, ["get", "patch"]))
    bind(admin, team_a, editor, f"alice-{tag}")
    bind(admin, team_a, editor, f"bob-{tag}")
    bind(admin, team_b, editor, f"bob-{tag}")
    admin.create(
        f"{RBAC}/clusterrolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": patcher},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": patcher},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": f"recorder-{tag}"}],
        },
    )
    alice = admin.impersonating(f"alice-{tag}")
    # The API server loads a new policy (and new RBAC) a moment after it is written: wait until a dry
    # run of the first test's case is refused by the policy, so no test races its installation.
    probe = pod_kill("probe", namespaces=["kube-system"])
    admin.wait_for(
        lambda: _policy_refuses(alice, f"{GROUP}/namespaces/{team_a}/podchaos", probe),
        timeout=20,
        what="the admission policy in effect",
    )
    try:
        yield Tenants(
            admin, team_a, team_b, alice, admin.impersonating(f"bob-{tag}"), admin.impersonating(f"recorder-{tag}")
        )
    finally:
        for ns in (team_a, team_b):
            for item in (admin.get(f"{GROUP}/namespaces/{ns}/podchaos") or {}).get("items", []):
                admin.merge_patch(
                    f"{GROUP}/namespaces/{ns}/podchaos/{item['metadata']['name']}", {"metadata": {"finalizers": None}}
                )
            admin.delete(f"/api/v1/namespaces/{ns}")
        admin.delete(f"{RBAC}/clusterrolebindings/{patcher}")
        for name in (editor, patcher):
            admin.delete(f"{RBAC}/clusterroles/{name}")


def _policy_refuses(client: KubeClient, path: str, obj: Obj) -> bool:
    try:
        client.request("POST", path, obj, query={"dryRun": "All"})
    except KubeError as e:
        return e.status == 403 and "ValidatingAdmissionPolicy" in str(e.body)
    return False


def role(name: str, verbs: list[str]) -> Obj:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [
            {
                "apiGroups": ["chaos-mesh.org"],
                "resources": ["podchaos", "networkchaos", "schedules", "workflows"],
                "verbs": verbs,
            }
        ],
    }


def bind(admin: KubeClient, namespace: str, role_name: str, user: str) -> None:
    admin.create(
        f"{RBAC}/namespaces/{namespace}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )


def pod_kill(name: str, **selector: Any) -> Obj:
    return {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "PodChaos",
        "metadata": {"name": name},
        "spec": {"action": "pod-kill", "mode": "one", "selector": {"labelSelectors": {"app": "x"}, **selector}},
    }


def partition(target_namespaces: list[str]) -> Obj:
    return {
        "action": "partition",
        "mode": "all",
        "selector": {"labelSelectors": {"app": "x"}},
        "direction": "to",
        "target": {"mode": "all", "selector": {"namespaces": target_namespaces}},
    }


def refused(client: KubeClient, path: str, obj: Obj) -> str:
    with pytest.raises(KubeError) as err:
        client.create(path, obj)
    assert err.value.status == 403, err.value.body
    message: str = err.value.body["message"]
    assert "ValidatingAdmissionPolicy 'chaosbus-selected-namespaces'" in message, message
    return message


def test_a_team_a_user_cannot_target_kube_system(tenants: Tenants) -> None:
    path = f"{GROUP}/namespaces/{tenants.team_a}/podchaos"
    message = refused(tenants.alice, path, pod_kill("kill-dns", namespaces=["kube-system"]))
    assert "selector.namespaces" in message and "kube-system" in message and "alice-" in message
    assert tenants.admin.get(f"{path}/kill-dns") is None
    refused(tenants.alice, path, pod_kill("kill-listed", pods={"kube-system": ["coredns-0"]}))
    refused(tenants.alice, path, pod_kill("kill-both", namespaces=[tenants.team_a, "kube-system"]))


def test_a_team_a_user_may_target_team_a_and_its_own_namespace_by_default(tenants: Tenants) -> None:
    path = f"{GROUP}/namespaces/{tenants.team_a}/podchaos"
    tenants.alice.create(path, pod_kill("own", namespaces=[tenants.team_a]))
    tenants.alice.create(path, pod_kill("implicit"))
    assert tenants.admin.get(f"{path}/own") is not None and tenants.admin.get(f"{path}/implicit") is not None


def test_embedded_selectors_are_checked_in_schedules_and_workflows(tenants: Tenants) -> None:
    ns = tenants.team_a
    schedule = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "Schedule",
        "metadata": {"name": "cut"},
        "spec": {
            "schedule": "@every 1h",
            "type": "NetworkChaos",
            "concurrencyPolicy": "Forbid",
            "networkChaos": partition(["kube-system"]),
        },
    }
    assert "kube-system" in refused(tenants.alice, f"{GROUP}/namespaces/{ns}/schedules", schedule)
    workflow = {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "wf"},
        "spec": {
            "entry": "entry",
            "templates": [
                {"name": "entry", "templateType": "Serial", "children": ["cut"]},
                {
                    "name": "cut",
                    "templateType": "NetworkChaos",
                    "deadline": "10s",
                    "networkChaos": partition(["kube-system"]),
                },
            ],
        },
    }
    refused(tenants.alice, f"{GROUP}/namespaces/{ns}/workflows", workflow)
    workflow["spec"]["templates"][1]["networkChaos"] = partition([ns])
    tenants.alice.create(f"{GROUP}/namespaces/{ns}/workflows", workflow)


def test_a_user_allowed_in_both_namespaces_may_cross_them(tenants: Tenants) -> None:
    path = f"{GROUP}/namespaces/{tenants.team_a}/podchaos"
    refused(tenants.alice, path, pod_kill("cross", namespaces=[tenants.team_b]))
    tenants.bob.create(path, pod_kill("cross", namespaces=[tenants.team_b]))


def test_writes_that_keep_the_spec_need_no_right_on_the_selected_namespaces(tenants: Tenants) -> None:
    path = f"{GROUP}/namespaces/{tenants.team_a}/podchaos"
    tenants.admin.create(path, pod_kill("by-admin", namespaces=["kube-system"]))
    patched = tenants.recorder.merge_patch(f"{path}/by-admin", {"metadata": {"finalizers": ["chaos-mesh/records"]}})
    assert patched["metadata"]["finalizers"] == ["chaos-mesh/records"]
    # A spec change is checked as a create would be (an experiment's spec is immutable; a Schedule's is not).
    schedules = f"{GROUP}/namespaces/{tenants.team_a}/schedules"
    tenants.bob.create(
        schedules,
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "Schedule",
            "metadata": {"name": "nightly"},
            "spec": {
                "schedule": "@every 1h",
                "type": "PodChaos",
                "concurrencyPolicy": "Forbid",
                "podChaos": pod_kill("x", namespaces=[tenants.team_b])["spec"],
            },
        },
    )
    with pytest.raises(KubeError) as err:
        tenants.bob.merge_patch(
            f"{schedules}/nightly", {"spec": {"podChaos": {"selector": {"namespaces": ["kube-system"]}}}}
        )
    assert err.value.status == 403 and "kube-system" in err.value.body["message"]
