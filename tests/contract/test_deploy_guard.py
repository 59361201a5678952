"""The SLO guard's place in the deploy base: `chaosbus guard` with flags its parser accepts, its
objective from the ConfigMap chaosbus-guard and its halt-only key from the Secret
chaosbus-guard-key, its own generated NATS identity (the kill switch and nothing else), no API
access, scraped on the port it serves, and a NetworkPolicy that admits only its metrics port.
"""

from __future__ import annotations

import pytest
from contract.test_deploy import container, container_env, named, objects, pod_spec, secret_mounts, workloads

from chaosbus.cli import main, natssecrets
from chaosbus.common import natsauth

NAME = "chaosbus-guard"
PORT = 9106


def mounts_by_source() -> dict[str, str]:
    """ConfigMap or Secret name -> mount path in the guard's container."""
    volumes = {
        v["name"]: (v.get("secret") or {}).get("secretName") or (v.get("configMap") or {}).get("name")
        for v in pod_spec(NAME)["volumes"]
    }
    return {volumes[m["name"]]: m["mountPath"] for m in container(NAME)["volumeMounts"] if m.get("readOnly")}


def test_it_runs_the_guard_with_flags_its_parser_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    c = container(NAME)
    assert c["image"] == "chaosbus" and c["command"] == ["python", "-m", "chaosbus.cli"]
    for key, value in container_env(c).items():
        monkeypatch.setenv(key, value)
    args = main.build_parser().parse_args(c["args"])
    assert args.command == "guard"
    mounts = mounts_by_source()
    assert args.config == f"{mounts['chaosbus-guard']}/guard.yaml"  # the ConfigMap
    assert args.key == f"{mounts['chaosbus-guard-key']}/guard.key"  # the Secret
    assert (args.metrics_addr, args.metrics_port) == ("0.0.0.0", PORT)
    assert args.prometheus is None  # the objective comes from the ConfigMap only


def test_it_waits_for_its_objective_and_key_instead_of_failing_the_rollout() -> None:
    volumes = {v["name"]: v for v in pod_spec(NAME)["volumes"]}
    config = [v for v in volumes.values() if v.get("configMap", {}).get("name") == "chaosbus-guard"]
    key = [v for v in volumes.values() if v.get("secret", {}).get("secretName") == "chaosbus-guard-key"]
    assert config[0]["configMap"]["optional"] is True and key[0]["secret"]["optional"] is True
    assert not [d for d in objects("ConfigMap") if d["metadata"]["name"] == "chaosbus-guard"], (
        "the objective is the operator's: a shipped one would halt clusters without its Prometheus"
    )


def test_it_mounts_its_own_generated_identity_which_may_only_write_the_kill_switch() -> None:
    mounts = secret_mounts(NAME)
    env = container_env(container(NAME))
    [nats] = [p for p, s in mounts.items() if s.startswith("chaosbus-nats-")]
    assert mounts[nats] == "chaosbus-nats-guard"
    user = {u.secret: u for u in natssecrets.CLUSTER_USERS}["chaosbus-nats-guard"]
    assert user.identity == "guard"
    assert (env["CHAOSBUS_NATS_CREDS"], env["CHAOSBUS_NATS_TLS_DIR"]) == (f"{nats}/nkey", nats)
    assert set(mounts.values()) == {"chaosbus-nats-guard", "chaosbus-guard-key"}
    assert {v["secret"]["defaultMode"] for v in pod_spec(NAME)["volumes"] if "secret" in v} == {0o440}
    p = natsauth.permissions("guard")
    writes = [s for s in p.publish if not s.startswith(("$JS.API.", "$JS.FC."))]
    assert writes == ["$KV.control.>", "chaos.control.halt"]
    assert p.subscribe == ("_INBOX.<own public key>.>",)


def test_it_has_no_api_access_and_is_hardened() -> None:
    from contract.test_deploy import grants

    spec, sc = pod_spec(NAME), container(NAME)["securityContext"]
    assert spec["automountServiceAccountToken"] is False
    assert named("ServiceAccount", spec["serviceAccountName"])["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] not in grants()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def test_it_is_scraped_on_the_port_it_serves_and_only_that_port_is_reachable() -> None:
    labels = workloads()[NAME]["spec"]["template"]["metadata"]["labels"]
    annotations = workloads()[NAME]["spec"]["template"]["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", str(PORT))
    assert {"name": "metrics", "containerPort": PORT} in container(NAME)["ports"]
    policy = named("NetworkPolicy", NAME)["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": PORT}]}]
    # and NATS admits it, as every chaosbus pod
    nats_peers = named("NetworkPolicy", "nats")["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert nats_peers.items() <= labels.items()
