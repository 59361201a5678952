"""The deploy base (deploy/k8s), the Dockerfile and the Tiltfile agree with the code they run:
every file the kustomizations list exists and parses; every container runs a real entry point with
flags its argparse accepts and env the code reads; RBAC is least privilege per ServiceAccount; the
injector DaemonSet is unprivileged with exactly the capabilities it needs; every workload is
annotated for scraping on the port it really serves. With kubectl on PATH the base is rendered by
kustomize, and against a real API server (tests/conftest.py's real_kube: KUBEBUILDER_ASSETS or
CHAOSBUS_TEST_KUBECONFIG) it is applied server-side.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaosbus.authcallout import core
from chaosbus.cli import natssecrets
from chaosbus.common import config, natsauth, service
from chaosbus.common.crd import WATCHED_KINDS, plural_of

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s"
NAMESPACE = "chaosbus"
# Workload -> (service module, metrics port) as the brief and each service's parser define them.
WORKLOADS = {
    "chaosbus-watcher": ("watcher", 9101),
    "chaosbus-scheduler": ("scheduler", 9102),
    "chaosbus-injector": ("injector", 9103),
    "chaosbus-cluster-injector": ("injector", 9103),
    "chaosbus-recorder": ("recorder", 9104),
    "chaosbus-auth": ("authcallout", 9105),
}
Obj = dict[str, Any]


# --- loading ---------------------------------------------------------------------------------------


def load(folder: Path) -> list[Obj]:
    """Every object a kustomization lists, following directories that hold a kustomization."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs: list[Obj] = []
    for entry in kustomization["resources"]:
        path = folder / entry
        assert path.exists(), f"{folder.relative_to(ROOT)}/kustomization.yaml lists missing {entry}"
        if path.is_dir():
            docs += load(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


DOCS = load(BASE)


def objects(kind: str) -> list[Obj]:
    return [d for d in DOCS if d["kind"] == kind]


def named(kind: str, name: str) -> Obj:
    [found] = [d for d in objects(kind) if d["metadata"]["name"] == name]
    return found


def workloads() -> dict[str, Obj]:
    return {d["metadata"]["name"]: d for d in DOCS if d["kind"] in ("Deployment", "DaemonSet")}


def pod_spec(name: str) -> Obj:
    spec: Obj = workloads()[name]["spec"]["template"]["spec"]
    return spec


def container(name: str) -> Obj:
    c: Obj = pod_spec(name)["containers"][0]
    return c


def config_env() -> dict[str, str]:
    data: dict[str, str] = named("ConfigMap", "chaosbus-config")["data"]
    return data


def container_env(c: Obj) -> dict[str, str]:
    """The container's environment as the kubelet builds it (fieldRefs get a stand-in value)."""
    env = (
        dict(config_env())
        if any(s.get("configMapRef", {}).get("name") == "chaosbus-config" for s in c.get("envFrom", []))
        else {}
    )
    for e in c.get("env", []):
        env[e["name"]] = e.get("value", f"<{e['name'].lower()}>")
    return env


def expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command/args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def test_every_listed_file_exists_and_parses() -> None:
    kinds = {d["kind"] for d in DOCS}
    assert {
        "Namespace",
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "DaemonSet",
        "Service",
        "PersistentVolumeClaim",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    } <= kinds
    assert all(d.get("apiVersion") and d["metadata"].get("name") for d in DOCS)
    assert len(objects("CustomResourceDefinition")) == len(list((BASE / "crds").glob("*.chaos-mesh.org.yaml")))


def test_every_yaml_file_in_the_base_is_listed() -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    assert {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"} == listed - {"crds"}


def test_namespaced_objects_live_in_the_chaosbus_namespace() -> None:
    cluster_kinds = {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    assert named("Namespace", NAMESPACE)
    assert {d["metadata"].get("namespace") for d in DOCS if d["kind"] not in cluster_kinds} == {NAMESPACE}


# --- entry points and flags ------------------------------------------------------------------------


def parse(module: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """Run `python -m chaosbus.<module>`'s main with its real parser; capture the parsed args
    instead of starting the service.
    """
    captured: list[argparse.Namespace] = []
    monkeypatch.setattr(service, "run", lambda name, args, main: captured.append(args))
    entry = importlib.import_module(f"chaosbus.{module}.__main__")
    entry.main(argv)
    [args] = captured
    return args


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_container_runs_the_service_with_flags_its_parser_accepts(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module, port = WORKLOADS[name]
    c = container(name)
    assert c["image"] == "chaosbus"
    assert c["command"] == ["python", "-m", f"chaosbus.{module}"]
    env = container_env(c)
    argv = [expand(a, env) for a in c.get("args", [])]
    assert not [a for a in argv if "$(" in a], f"{name}: args reference env it does not set: {argv}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # flags may take their defaults from the environment
    try:
        args = parse(module, argv, monkeypatch)
    except SystemExit:
        err = capsys.readouterr().err
        raise AssertionError(f"{name}: python -m chaosbus.{module} {' '.join(argv)} is refused:\n{err}") from None
    assert (args.metrics_port, args.metrics_addr) == (port, "0.0.0.0"), "metrics must be reachable from outside"
    assert parse(module, [a for a in argv if not a.startswith("--metrics-port")], monkeypatch).metrics_port == port
    if module in ("watcher", "recorder"):
        assert args.kube, f"{name} must talk to the Kubernetes API"
    if module == "injector":
        assert args.cluster == (name == "chaosbus-cluster-injector")
        assert args.journal and Path(args.journal).parent.as_posix() in writable_mounts(name), (
            f"{name}: the journal {args.journal} is not on a writable volume"
        )
    if name == "chaosbus-injector":
        assert args.node == "<node_name>"  # the downward API's spec.nodeName
    if module == "scheduler":
        assert args.cluster_injector, "API-level faults must go to the cluster injector"
    if module in ("watcher", "scheduler"):
        assert service.scope(args) == config.ControllerScope(True, "", False)


def writable_mounts(name: str) -> set[str]:
    """Mount paths of `name`'s container backed by durable storage (hostPath or PVC), read-write."""
    durable = {v["name"] for v in pod_spec(name)["volumes"] if "hostPath" in v or "persistentVolumeClaim" in v}
    return {
        m["mountPath"]
        for m in container(name).get("volumeMounts", [])
        if m["name"] in durable and not m.get("readOnly")
    }


def test_every_env_variable_set_is_read_by_the_code() -> None:
    source = "\n".join(p.read_text() for folder in ("libs", "services", "cli") for p in (ROOT / folder).rglob("*.py"))
    set_names = set(config_env())
    argv_refs: set[str] = set()
    for name in workloads():
        c = container(name)
        set_names |= {e["name"] for e in c.get("env", [])}
        argv_refs |= set(re.findall(r"\$\((\w+)\)", " ".join(c.get("args", []))))
    assert {n for n in set_names - argv_refs if f'"{n}"' not in source} == set()


def test_nats_url_points_at_the_nats_service_with_jetstream_on_a_pvc() -> None:
    url = config_env()["CHAOSBUS_NATS_URL"]
    host, port = re.fullmatch(r"tls://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    svc = named("Service", "nats")
    assert host in (svc["metadata"]["name"], f"nats.{NAMESPACE}.svc", f"nats.{NAMESPACE}.svc.cluster.local")
    assert int(port) in [p["port"] for p in svc["spec"]["ports"]]
    nats = container("nats")
    assert nats["image"].startswith("nats:")
    assert "--jetstream" in nats["args"]
    [store] = [a.split("=", 1)[1] for a in nats["args"] if a.startswith("--store_dir=")]
    [mount] = [m for m in nats["volumeMounts"] if m["mountPath"] == store]
    [volume] = [v for v in pod_spec("nats")["volumes"] if v["name"] == mount["name"]]
    assert named("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert svc["spec"]["selector"].items() <= workloads()["nats"]["spec"]["template"]["metadata"]["labels"].items()


# --- NATS: mutual TLS, identities, reachability -----------------------------------------------------


def secret_mounts(name: str, which: str = "containers") -> dict[str, str]:
    """mountPath -> Secret name of `name`'s first container (or init container)."""
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod_spec(name)["volumes"] if "secret" in v}
    c = pod_spec(name)[which][0]
    return {m["mountPath"]: secrets[m["name"]] for m in c.get("volumeMounts", []) if m["name"] in secrets}


GENERATED = {u.secret: u for u in natssecrets.CLUSTER_USERS}


def test_the_generated_secrets_carry_only_valid_label_values() -> None:
    # The API server refuses the whole Secret otherwise, and `kubectl apply` of the output fails.
    value = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
    for doc in yaml.safe_load_all(natssecrets.secrets_yaml()):
        if doc:
            for key, label in doc["metadata"].get("labels", {}).items():
                assert len(label) <= 63 and value.match(label), (doc["metadata"]["name"], key, label)


def test_nats_runs_the_generated_configuration_with_tls_from_its_secret() -> None:
    nats = container("nats")
    [conf] = [a.split("=", 1)[1] for a in nats["args"] if a.startswith("--config=")]
    mounts = secret_mounts("nats")
    assert mounts == {natssecrets.SERVER_TLS_DIR: natssecrets.SERVER_SECRET}
    assert conf == f"{natssecrets.SERVER_TLS_DIR}/nats.conf"
    server_conf = [d for d in yaml.safe_load_all(natssecrets.secrets_yaml()) if d][0]
    assert server_conf["metadata"]["name"] == natssecrets.SERVER_SECRET
    tls = json.loads(server_conf["stringData"]["nats.conf"])["tls"]
    assert tls["verify"] is True, "clients without a certificate from the CA must be refused"
    assert {tls["cert_file"], tls["key_file"], tls["ca_file"]} == {
        f"{natssecrets.SERVER_TLS_DIR}/{f}" for f in ("tls.crt", "tls.key", "ca.crt")
    }
    assert set(server_conf["stringData"]) == {"nats.conf", "tls.crt", "tls.key", "ca.crt"}


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("chaosbus-watcher", "chaosbus-nats-watcher"),
        ("chaosbus-scheduler", "chaosbus-nats-scheduler"),
        ("chaosbus-recorder", "chaosbus-nats-recorder"),
        ("chaosbus-cluster-injector", "chaosbus-nats-cluster-injector"),
        ("chaosbus-auth", "chaosbus-nats-auth"),
    ],
)
def test_every_service_mounts_only_its_own_identity_and_uses_it(name: str, secret: str) -> None:
    module = WORKLOADS[name][0]
    assert secret in GENERATED and GENERATED[secret].identity == {"authcallout": "auth"}.get(module, module)
    env = container_env(container(name))
    # NATS identities only: the signing keys have their own contract (test_deploy_signing.py)
    mounts = {p: s for p, s in secret_mounts(name).items() if s.startswith("chaosbus-nats-")}
    assert list(mounts.values()) == [secret], f"{name} mounts {mounts}"
    [path] = mounts
    assert (env["CHAOSBUS_NATS_CREDS"], env["CHAOSBUS_NATS_TLS_DIR"]) == (f"{path}/nkey", path)
    assert {v["secret"]["defaultMode"] for v in pod_spec(name)["volumes"] if "secret" in v} == {0o440}
    sc = pod_spec(name).get("securityContext", {})  # none: root, as the node injector runs
    assert sc.get("runAsUser", 0) == 0 or sc.get("fsGroup") == sc["runAsGroup"], "the mounted seed is unreadable"
    if name == "chaosbus-cluster-injector":
        assert GENERATED[secret].name == natsauth.user_name("injector", "_cluster")


def test_node_injectors_share_no_nats_identity_and_prove_their_node_with_a_bound_token() -> None:
    """A Secret is per namespace: the node injectors' carries a client certificate and no nkey; each
    connects with its pod's projected token, which only the auth service can turn into a user.
    """
    yamls = [d for d in yaml.safe_load_all(natssecrets.secrets_yaml()) if d]
    docs = {d["metadata"]["name"]: d["stringData"] for d in yamls}
    assert set(docs[natssecrets.NODE_INJECTORS_SECRET]) == {"tls.crt", "tls.key", "ca.crt"}
    assert natssecrets.NODE_INJECTORS_SECRET not in GENERATED
    env = container_env(container("chaosbus-injector"))
    assert "CHAOSBUS_NATS_CREDS" not in env
    spec = pod_spec("chaosbus-injector")
    [projected] = [v["projected"] for v in spec["volumes"] if "projected" in v]
    [source] = projected["sources"]
    token = source["serviceAccountToken"]
    assert token["audience"] == core.AUDIENCE and token["expirationSeconds"] <= 3600
    [mount] = [
        m
        for m in container("chaosbus-injector")["volumeMounts"]
        if m["name"] == next(v["name"] for v in spec["volumes"] if "projected" in v)
    ]
    assert env["CHAOSBUS_NATS_TOKEN_FILE"] == f"{mount['mountPath']}/{token['path']}"
    assert spec["automountServiceAccountToken"] is False  # no API token: only the NATS one
    # nats-server sends every connection that is not an nkey user to the auth service
    server = json.loads(docs[natssecrets.SERVER_SECRET]["nats.conf"])["authorization"]
    callout = server["auth_callout"]
    assert sorted(callout["auth_users"]) == sorted(u["nkey"] for u in server["users"])
    assert len(server["users"]) == len(natssecrets.CLUSTER_USERS)
    issuer = docs["chaosbus-nats-auth"][natssecrets.ISSUER_KEY].strip()
    assert natsauth.public_key(issuer) == callout["issuer"] and issuer.startswith("SA")
    # the auth service reviews tokens and reads pods, nothing else
    assert grants()["chaosbus-auth"] == {("authentication.k8s.io", "tokenreviews", "create"), ("", "pods", "get")}
    assert (
        container_env(container("chaosbus-auth"))["CHAOSBUS_AUTH_ISSUER_SEED_FILE"]
        == f"{next(iter(secret_mounts('chaosbus-auth')))}/{natssecrets.ISSUER_KEY}"
    )


def test_only_an_init_container_holds_the_admin_identity_and_it_declares() -> None:
    holders = [n for n in workloads() if "chaosbus-nats-admin" in secret_mounts(n).values()]
    assert holders == []
    [init] = pod_spec("chaosbus-scheduler")["initContainers"]
    assert init["command"] == ["python", "-m", "chaosbus.cli", "declare"]
    [path] = [p for p, s in secret_mounts("chaosbus-scheduler", "initContainers").items() if s == "chaosbus-nats-admin"]
    env = container_env(init)
    assert (env["CHAOSBUS_NATS_CREDS"], env["CHAOSBUS_NATS_TLS_DIR"]) == (f"{path}/nkey", path)
    from chaosbus.cli import main

    assert main.build_parser().parse_args(["declare"]).command == "declare"


def test_the_monitoring_port_is_not_in_the_service() -> None:
    assert [p["port"] for p in named("Service", "nats")["spec"]["ports"]] == [4222]


def test_only_chaosbus_pods_reach_nats_and_only_its_client_port() -> None:
    spec = named("NetworkPolicy", "nats")["spec"]
    assert (
        spec["podSelector"]["matchLabels"].items()
        <= workloads()["nats"]["spec"]["template"]["metadata"]["labels"].items()
    )
    assert spec["policyTypes"] == ["Ingress"]
    [rule] = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 4222}]
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"}, "no namespaceSelector: only pods of this namespace"
    selector = peer["podSelector"]["matchLabels"]
    for name in WORKLOADS:
        assert selector.items() <= workloads()[name]["spec"]["template"]["metadata"]["labels"].items(), name


def test_node_injectors_stay_off_control_plane_nodes_unless_a_node_opts_in() -> None:
    terms = pod_spec("chaosbus-injector")["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    exprs = [t["matchExpressions"] for t in terms]
    assert [{"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}] in exprs
    assert [{"key": "chaosbus.io/injector", "operator": "In", "values": ["allowed"]}] in exprs
    assert len(terms) == 2  # terms are ORed: a control-plane node runs one only when labelled


# --- metrics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_workload_is_annotated_for_scraping_on_the_port_it_serves(name: str) -> None:
    annotations = workloads()[name]["spec"]["template"]["metadata"]["annotations"]
    port = WORKLOADS[name][1]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", str(port))
    assert {"name": "metrics", "containerPort": port} in container(name)["ports"]
    assert f"--metrics-port={port}" in container(name)["args"]


@pytest.mark.parametrize("name", sorted(workloads()))
def test_every_workload_is_ready_only_when_its_readiness_endpoint_says_so(name: str) -> None:
    """A chaosbus container's /readyz is 503 while it has no NATS connection or its main loop is
    not running (and, for the Kubernetes API's clients, while that API is silent); /metrics answers
    200 regardless. No liveness probe asks /readyz: a NATS or API outage would restart every pod,
    and a dead main loop already ends the process.
    """
    c = container(name)
    probe = c.get("readinessProbe", {}).get("httpGet", {})
    ports = {p["name"] for p in c["ports"]}
    assert probe.get("port") in ports, f"{name}: readinessProbe port {probe.get('port')} is none of {ports}"
    if c["image"] != "chaosbus":  # nats-server's own health endpoint
        assert probe.get("path", "").startswith("/healthz"), name
        return
    assert probe.get("path") == "/readyz", f"{name}: readinessProbe on {probe.get('path')}"
    assert c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/readyz", name


# --- RBAC ------------------------------------------------------------------------------------------


def grants() -> dict[str, set[tuple[str, str, str]]]:
    """ServiceAccount -> every (apiGroup, resource, verb) its bindings give it."""
    roles = {(r["kind"], r["metadata"]["name"]): r for r in objects("ClusterRole") + objects("Role")}
    out: dict[str, set[tuple[str, str, str]]] = {}
    for binding in objects("ClusterRoleBinding") + objects("RoleBinding"):
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["namespace"] == NAMESPACE
            out.setdefault(subject["name"], set()).update(
                (g, res, v)
                for rule in role["rules"]
                for g in rule["apiGroups"]
                for res in rule["resources"]
                for v in rule["verbs"]
            )
    return out


def holders(predicate: Any) -> set[str]:
    return {sa for sa, rules in grants().items() if any(predicate(g, r, v) for g, r, v in rules)}


def test_no_rbac_wildcards() -> None:
    for role in objects("ClusterRole") + objects("Role"):
        for rule in role["rules"]:
            assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], role["metadata"]["name"]


def test_only_the_watcher_lists_and_watches_and_it_sees_everything_it_projects() -> None:
    assert holders(lambda g, r, v: v in ("list", "watch")) == {"chaosbus-watcher"}
    rules = grants()["chaosbus-watcher"]
    wanted = [("chaos-mesh.org", plural_of(k)) for k in WATCHED_KINDS] + [
        ("", "pods"),
        ("", "namespaces"),
        ("", "nodes"),
    ]
    missing = [(g, r, v) for g, r in wanted for v in ("get", "list", "watch") if (g, r, v) not in rules]
    assert missing == []
    assert {v for _, _, v in rules} == {"get", "list", "watch"}


def test_only_the_recorder_writes_status_finalizers_children_and_events() -> None:
    assert holders(lambda g, r, v: r.endswith("/status")) == {"chaosbus-recorder"}
    assert holders(lambda g, r, v: g == "chaos-mesh.org" and v not in ("get", "list", "watch")) == {"chaosbus-recorder"}
    assert holders(lambda g, r, v: r == "events") == {"chaosbus-recorder"}
    rules = grants()["chaosbus-recorder"]
    for kind in WATCHED_KINDS:
        plural = plural_of(kind)
        assert {("chaos-mesh.org", plural, "patch"), ("chaos-mesh.org", f"{plural}/status", "patch")} <= rules
    assert {
        ("chaos-mesh.org", p, v)
        for p in ("podchaos", "networkchaos", "schedules", "workflows")
        for v in ("create", "delete")
    } <= rules
    assert ("", "events", "create") in rules


def test_only_the_cluster_injector_touches_pods_and_only_them() -> None:
    writes = ("create", "patch", "delete", "update")
    assert holders(lambda g, r, v: r == "pods" and v in writes) == {"chaosbus-cluster-injector"}
    assert holders(lambda g, r, v: r == "pods/log") == {"chaosbus-cluster-injector"}
    # pod-kill, pod-failure and Task Pods (created, read by name, deleted at their timeout, logs read)
    assert grants()["chaosbus-cluster-injector"] == {("", "pods", v) for v in ("get", "create", "patch", "delete")} | {
        ("", "pods/log", "get")
    }


def test_scheduler_node_injectors_and_nats_have_no_api_access() -> None:
    for name in ("chaosbus-scheduler", "chaosbus-injector", "nats"):
        sa = pod_spec(name)["serviceAccountName"]
        assert sa not in grants(), f"{name} is bound to a role"
        assert pod_spec(name)["automountServiceAccountToken"] is False, f"{name} mounts a token"
        audiences = [
            s["serviceAccountToken"]["audience"]
            for v in pod_spec(name)["volumes"]
            if "projected" in v
            for s in v["projected"]["sources"]
            if "serviceAccountToken" in s
        ]
        assert set(audiences) <= {core.AUDIENCE}, f"{name} mounts a token the API server accepts"


def test_each_workload_has_its_own_service_account() -> None:
    accounts = {d["metadata"]["name"] for d in objects("ServiceAccount")}
    used = [pod_spec(n)["serviceAccountName"] for n in workloads()]
    assert len(used) == len(set(used)) and set(used) <= accounts


# --- the node injector -----------------------------------------------------------------------------


def test_injector_daemonset_is_unprivileged_with_only_the_capabilities_it_needs() -> None:
    ds = workloads()["chaosbus-injector"]
    assert ds["kind"] == "DaemonSet"
    spec, sc = pod_spec("chaosbus-injector"), container("chaosbus-injector")["securityContext"]
    assert spec["hostPID"] is True and not spec.get("hostNetwork")
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == ["KILL", "NET_ADMIN", "SYS_ADMIN", "SYS_CHROOT", "SYS_PTRACE"]


def test_injector_mounts_journal_netns_and_runtime_socket() -> None:
    spec, c = pod_spec("chaosbus-injector"), container("chaosbus-injector")
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert host[mounts["/var/lib/chaosbus"]["name"]] == "/var/lib/chaosbus"
    assert not mounts["/var/lib/chaosbus"].get("readOnly")
    netns = mounts["/var/run/netns"]
    assert host[netns["name"]] == "/run/netns"  # where the mount is: containerd follows no symlink to it
    assert netns["readOnly"] and netns["mountPropagation"] == "HostToContainer"
    runtime = mounts["/run/containerd"]
    assert host[runtime["name"]] == "/run/containerd" and runtime["readOnly"]


def test_other_chaosbus_workloads_run_as_non_root_without_capabilities() -> None:
    for name in set(WORKLOADS) - {"chaosbus-injector"}:
        spec, sc = pod_spec(name), container(name)["securityContext"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False, name
        assert sc["readOnlyRootFilesystem"] is True, name


# --- image and Tilt --------------------------------------------------------------------------------


def test_dockerfile_copies_every_package_source_and_installs_the_tools() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    # From the build context (a COPY --from takes files from a build stage instead).
    copied = {
        src
        for line in re.findall(r"^COPY (.+)$", text, re.M)
        if not line.startswith("--from=")
        for src in line.split()[:-1]
    }
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    tops = {d.split("/", 1)[0] for d in package_dirs.values()}
    assert tops | {"pyproject.toml", "README.md"} <= copied
    for tool in ("nftables", "iproute2", "util-linux"):
        assert re.search(rf"apt-get install[^\n]*\b{tool}\b", text), tool
    # The native helpers are built in a stage and shipped where the injector looks for them.
    assert re.search(r"^RUN make -C native$", text, re.M) and "ENV CHAOSBUS_NATIVE_DIR=/opt/chaosbus/native" in text
    for helper in ("timeskew", "skew_payload.bin", "nsexec"):
        assert re.search(rf"^COPY --from=native [^\n]*/{re.escape(helper)}\b", text, re.M), helper
    [user] = re.findall(r"^USER (\S+)", text, re.M)
    assert not user.startswith(("0", "root"))
    allowed = {ln[1:].rstrip("/") for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.startswith("!")}
    assert copied <= allowed


def test_tiltfile_builds_the_manifests_image_and_forwards_every_metrics_port() -> None:
    text = (ROOT / "Tiltfile").read_text()
    assert re.search(r"docker_build\('chaosbus', '\.'", text)
    assert "k8s_yaml(kustomize('deploy/k8s'))" in text
    forwards = dict(re.findall(r"k8s_resource\('([\w-]+)', port_forwards=\[([^\]]*)\]", text))
    for name, (_, port) in WORKLOADS.items():
        assert re.search(rf"'\d+:{port}'", forwards.get(name, "")), name
    remote = re.findall(r"'(\d+):\d+'", " ".join(forwards.values()))
    assert len(remote) == len(set(remote)), "two port forwards share a local port"


# --- real tools ------------------------------------------------------------------------------------


def _kubectl() -> str:
    """The envtest kubectl (KUBEBUILDER_ASSETS, a current kustomize) when there is one, else PATH's."""
    assets = Path(os.environ.get("KUBEBUILDER_ASSETS") or "/nonexistent") / "kubectl"
    kubectl = str(assets) if os.access(assets, os.X_OK) else shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH (Debian: apt-get install kubernetes-client)")
    return kubectl


def test_every_object_matches_the_kubernetes_schema_strictly() -> None:
    """Offline schema check (field names, types, unknown fields) of every object, CRDs included."""
    try:
        import kubernetes_validate  # type: ignore[import-not-found]
    except ImportError:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate: ~110 MB of schemas)")
    for doc in DOCS:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_kubectl_kustomize_renders_the_base() -> None:
    kubectl = _kubectl()
    version = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    kustomize = json.loads(version.stdout or "{}").get("kustomizeVersion", "") if version.returncode == 0 else ""
    if not kustomize.startswith(("v4", "v5")):
        pytest.skip(
            f"this kubectl embeds kustomize {kustomize or '< v4'} (kubectl < 1.21, e.g. Debian's 1.20), "
            "which cannot take a directory (crds) in resources"
        )
    done = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in DOCS
    )


def test_server_side_apply_of_the_base_succeeds(real_kube: Any) -> None:
    """`kubectl apply -k deploy/k8s` against a real API server: a server-side dry run (every object
    passes the server's validation and admission, the CRDs' schemas included) and then a real
    server-side apply of the CRDs (each one accepted as a structural schema and served).
    """
    kubectl = [_kubectl(), "--kubeconfig", str(real_kube.kubeconfig)]
    # A server-side dry run creates nothing, so objects in a namespace the same apply would create
    # are refused with NotFound; create the namespace for the duration if it is missing.
    missing = subprocess.run([*kubectl, "get", "namespace", NAMESPACE], capture_output=True, timeout=60).returncode != 0
    if missing:
        subprocess.run([*kubectl, "create", "namespace", NAMESPACE], check=True, capture_output=True, timeout=60)
    try:
        done = subprocess.run(
            [*kubectl, "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-k", str(BASE)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        if missing:
            subprocess.run(
                [*kubectl, "delete", "namespace", NAMESPACE, "--wait=false"], capture_output=True, timeout=60
            )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("serverside-applied (server dry run)") == len(DOCS), done.stdout
    crds = subprocess.run(
        [*kubectl, "apply", "--server-side", "--force-conflicts", "-k", str(BASE / "crds")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crds.returncode == 0, crds.stdout + crds.stderr
    names = [f"crd/{crd['metadata']['name']}" for crd in objects("CustomResourceDefinition")]
    established = subprocess.run(
        [*kubectl, "wait", "--for=condition=Established", "--timeout=60s", *names],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert established.returncode == 0, established.stderr


# --- authorized targets ----------------------------------------------------------------------------

NAMESPACED = ROOT / "deploy" / "k8s-namespaced"


def test_node_injectors_run_in_cluster_mode_and_every_service_sees_the_same_guard() -> None:
    from chaosbus.injector import authorize

    env = container_env(container("chaosbus-injector"))
    assert env["CHAOSBUS_MODE"] == authorize.CLUSTER, "node injectors must refuse process:// ids and Tasks"
    for name in ("chaosbus-scheduler", "chaosbus-injector", "chaosbus-cluster-injector"):
        c = container(name)
        own = [e for e in c.get("env", []) if e["name"] == "POD_NAMESPACE"]
        assert own and own[0]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", (
            f"{name} must know chaosbus's own namespace to protect it"
        )
        guard = config.target_guard(env={**container_env(c), "POD_NAMESPACE": NAMESPACE})
        assert guard.protected_namespaces == {NAMESPACE, "kube-system"} and not guard.allow_host_network_testing


def _rendered_namespaced() -> list[Obj]:
    kubectl = _kubectl()
    done = subprocess.run([kubectl, "kustomize", str(NAMESPACED)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and "must resolve to a file" in done.stderr:
        pytest.skip(f"this kubectl's kustomize cannot build an overlay of a directory: {done.stderr[:200]}")
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _rules(role: Obj) -> list[Obj]:
    return sorted(role["rules"], key=json.dumps)


def test_namespaced_roles_repeat_the_base_rules() -> None:
    """Offline: the overlay's Roles grant exactly what the base's ClusterRoles grant (the watcher: its
    namespaced part), so the two installs never drift apart."""
    roles = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all((NAMESPACED / "roles.yaml").read_text())
        if d and d["kind"] == "Role"
    }
    assert _rules(roles["chaosbus-recorder"]) == _rules(named("ClusterRole", "chaosbus-recorder"))
    assert _rules(roles["chaosbus-cluster-injector"]) == _rules(named("ClusterRole", "chaosbus-cluster-injector"))
    chaos = [r for r in named("ClusterRole", "chaosbus-watcher")["rules"] if r["apiGroups"] == ["chaos-mesh.org"]]
    pods = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    assert _rules(roles["chaosbus-watcher"]) == sorted([*chaos, pods], key=json.dumps)


def test_a_namespace_scoped_install_gets_roles_not_cluster_roles() -> None:
    docs = _rendered_namespaced()
    data = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "chaosbus-config")["data"]
    scope = config.controller_scope(env=data)
    assert not scope.cluster_scoped and scope.target_namespace
    target = scope.target_namespace
    cluster_roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    cluster_bindings = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    # Only what a Role cannot grant stays cluster-wide: reading Nodes and Namespaces, for the watcher,
    # and reviewing the node injectors' tokens (TokenReview is not namespaced), for the auth service.
    assert sorted(b["roleRef"]["name"] for b in cluster_bindings) == ["chaosbus-auth", "chaosbus-watcher"]
    assert _rules(cluster_roles["chaosbus-auth"]) == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]
    assert _rules(cluster_roles["chaosbus-watcher"]) == [
        {"apiGroups": [""], "resources": ["namespaces", "nodes"], "verbs": ["get", "list", "watch"]}
    ]
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    # The auth service reads the node injectors' pods where they run, chaosbus's own namespace.
    assert roles.pop("chaosbus-auth")["metadata"]["namespace"] == NAMESPACE
    bindings = [b for b in bindings if b["roleRef"]["name"] != "chaosbus-auth"]
    assert set(roles) == {"chaosbus-watcher", "chaosbus-recorder", "chaosbus-cluster-injector"}
    assert {r["metadata"]["namespace"] for r in roles.values()} == {target}
    for b in bindings:
        assert b["metadata"]["namespace"] == target and b["roleRef"]["kind"] == "Role"
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": b["roleRef"]["name"], "namespace": NAMESPACE}]
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    assert {b["roleRef"]["name"] for b in bindings} <= accounts


def test_server_side_dry_run_of_the_namespaced_overlay_succeeds(real_kube: Any) -> None:
    """`kubectl apply -k deploy/k8s-namespaced` passes a real API server's validation and admission."""
    kubectl = [_kubectl(), "--kubeconfig", str(real_kube.kubeconfig)]
    target = config.controller_scope(env=yaml.safe_load((NAMESPACED / "scope.yaml").read_text())["data"])
    created = []
    for ns in (NAMESPACE, target.target_namespace):
        phase = subprocess.run(
            [*kubectl, "get", "namespace", ns, "-o", "jsonpath={.status.phase}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if phase.stdout == "Terminating":  # another test's dry run just deleted it: let it go first
            subprocess.run(
                [*kubectl, "wait", "--for=delete", f"namespace/{ns}", "--timeout=60s"], capture_output=True, timeout=90
            )
        if phase.returncode != 0 or phase.stdout == "Terminating":
            subprocess.run([*kubectl, "create", "namespace", ns], check=True, capture_output=True, timeout=60)
            created.append(ns)
    try:
        done = subprocess.run(
            [*kubectl, "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-k", str(NAMESPACED)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        for ns in created:
            subprocess.run([*kubectl, "delete", "namespace", ns, "--wait=false"], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "role.rbac.authorization.k8s.io/chaosbus-recorder serverside-applied" in done.stdout, done.stdout
