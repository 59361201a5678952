"""deploy/k8s as shipped, running as pods on a real node (tests/kube/node.py): the images built
here (tests/kube/image.py) and imported into the node's containerd, the Secrets made the documented
way (`chaosbus nats-secrets`, `chaosbus keys generate` + `kubectl create secret`), and only the
overlay a user writes: the images, and the runtime socket's folder of this node (as on k3s). The
cluster side a provider gives is stood in for: PersistentVolumes for the two claims, and cluster
DNS plus the API server's Service (tests/kube/clusternet.py; there is no kube-proxy here).

Then, for real: every chaosbus pod becomes Ready (NATS with mutual TLS and the auth callout); the
node injector is its node's NATS user through its projected token, and a client with another
pod's token or none is refused; a NetworkChaos partition between two busybox pods cuts their TCP
traffic and `kubectl delete` restores it; the dashboard answers through its Service with the token
from its Secret and lists the experiment; the SLO guard, given an objective that is not met, halts
and the partition in force is recovered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
import yaml
from kube.client import KubeClient
from kube.clusternet import cluster_network
from kube.controlplane import ControlPlane
from kube.deploy import (
    ESSENTIAL,
    NS,
    Deployed,
    Obj,
    busybox,
    create_secrets,
    create_volumes,
    import_images,
    overlay,
    teardown,
    wait_ready,
    workloads,
)
from kube.image import chaosbus_image, nats_image
from kube.node import Node, connects, container_pid

from chaosbus.common import natsauth

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def deployed(real_kube: Any, real_node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    plane: ControlPlane = real_kube.plane
    if not (plane.bin_dir / "kubectl").exists():
        pytest.skip(f"no kubectl in {plane.bin_dir}: the deploy is applied as a user would, with kubectl")
    for tool in ("nft", "ldd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (make install as root installs it)")
    client = KubeClient(plane.kubeconfig)
    work = tmp_path_factory.mktemp("deploy")
    started = time.monotonic()
    chaosbus, nats_img = chaosbus_image(), nats_image()
    import_images(real_node, chaosbus, nats_img)
    print(f"\nimages built and imported in {time.monotonic() - started:.1f} s")
    d = Deployed(
        plane, real_node, client, work, overlay(work, chaosbus, nats_img, real_node), f"cbd-{uuid.uuid4().hex[:6]}"
    )
    rendered = d.kubectl("kustomize", str(d.overlay))
    d.expected = workloads(rendered)
    assert ESSENTIAL <= set(d.expected), d.expected
    made_journal_dir = not Path("/var/lib/chaosbus").exists()
    volumes: list[str] = []
    with cluster_network(real_node, client):
        try:
            d.kubectl("create", "namespace", NS)
            d.kubectl("create", "namespace", d.targets)
            # This API server build's ServiceAccount admission puts this ConfigMap into every
            # mounted token volume, and nothing publishes it.
            for ns in (NS, d.targets):
                d.kubectl("-n", ns, "create", "configmap", "openshift-service-ca.crt", "--from-literal=service-ca.crt=")
            create_secrets(d)
            volumes = create_volumes(d)
            # Server-side: the CRDs are too large for client-side apply's last-applied annotation.
            d.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(d.overlay))
            wait_ready(d)
            print(f"deployed, every pod Ready, {time.monotonic() - started:.1f} s after the start")
            yield d
        finally:
            teardown(d, rendered, volumes, made_journal_dir)


def test_every_chaosbus_pod_of_the_base_becomes_ready_with_nats_on_mutual_tls(deployed: Deployed) -> None:
    d = deployed
    assert d.ready() == d.expected
    images = {c["image"] for p in d.pods() for c in p["spec"]["containers"]}
    assert all(i.startswith("local/") for i in images), images  # the locally built ones, nothing pulled
    with contextlib.closing(__import__("socket").create_connection((d.pod_ip("nats"), 4222), timeout=10)) as s:
        info = json.loads(s.recv(4096).decode().removeprefix("INFO "))
    assert info["tls_required"] and info["auth_required"]
    assert info["jetstream"]


def auth_counts(d: Deployed) -> dict[str, float]:
    """chaosbus_auth_requests_total by outcome, summed over the auth service's pods."""
    total: dict[str, float] = {}
    for pod in d.pods(selector="app.kubernetes.io/name=chaosbus-auth"):
        text = urllib.request.urlopen(f"http://{pod['status']['podIP']}:9105/metrics", timeout=10).read().decode()
        for outcome, value in re.findall(r'^chaosbus_auth_requests_total\{outcome="(\w+)"\} (\S+)$', text, re.M):
            total[outcome] = total.get(outcome, 0.0) + float(value)
    return total


def token_for(d: Deployed, namespace: str, pod: Obj) -> str:
    """A token bound to `pod` for NATS's audience, as the kubelet would project it into that pod."""
    sa = pod["spec"].get("serviceAccountName") or "default"
    req = d.client.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": ["chaosbus-nats"],
                "expirationSeconds": 600,
                "boundObjectRef": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            },
        },
    )
    token: str = req["status"]["token"]
    return token


async def refused(url: str, tls_dir: Path, token: Path | None) -> list[str]:
    """The errors of a connection as a node injector would make it, which must not succeed."""
    errors: list[str] = []

    async def on_error(e: Exception) -> None:
        errors.append(str(e).lower())

    opts = natsauth.ClientAuth(tls_dir=tls_dir, token_file=token, inbox="_INBOX.injector").connect_options()
    opts["tls_hostname"] = f"nats.{NS}.svc"
    nc = nats.NATS()
    try:
        await nc.connect(url, allow_reconnect=False, max_reconnect_attempts=0, error_cb=on_error, **opts)
    except (nats.errors.Error, OSError) as e:
        errors.append(str(e).lower())
    else:
        await nc.close()
        raise AssertionError("connected")
    with contextlib.suppress(Exception):
        await nc.close()
    return errors


def test_the_node_injector_is_its_node_through_its_token_and_other_tokens_are_refused(
    deployed: Deployed, tmp_path: Path
) -> None:
    d = deployed
    [injector] = d.pods(selector="app.kubernetes.io/name=chaosbus-injector")
    log = d.kubectl("-n", NS, "logs", injector["metadata"]["name"])
    assert "injector ready" in log and d.node.name in log
    # the injector's connection, answered by the auth service
    before = d.eventually(
        lambda: (counts := auth_counts(d)).get("issued", 0) >= 1 and counts,
        60,
        f"a NATS user issued to the node injector\n{log}",
    )
    audit = [
        json.loads(line)
        for pod in d.pods(selector="app.kubernetes.io/name=chaosbus-auth")
        for line in d.kubectl("-n", NS, "logs", pod["metadata"]["name"]).splitlines()
        if '"nats user issued"' in line
    ]
    # this node's user, for the injector pod the token is bound to
    assert any(a["node"] == d.node.name and a["pod"] == f"{NS}/{injector['metadata']['name']}" for a in audit), audit
    tls = tmp_path / "tls"
    tls.mkdir()
    for key in ("ca.crt", "tls.crt", "tls.key"):
        (tls / key).write_text(d.secret("chaosbus-nats-injector", key))  # what every node's injector holds
    [dashboard] = d.pods(selector="app.kubernetes.io/name=chaosbus-dashboard")
    other = tmp_path / "other-token"
    other.write_text(token_for(d, NS, dashboard))  # another pod's, right audience, wrong account
    url = f"tls://{d.pod_ip('nats')}:4222"
    for token in (other, None):
        errors = asyncio.run(refused(url, tls, token))
        assert any("authorization violation" in e for e in errors), errors
    d.client.wait_for(
        lambda: auth_counts(d).get("refused", 0) >= before.get("refused", 0) + 1,
        timeout=30,
        what="the auth service counted the refusal",
    )


def networkchaos(name: str, namespace: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "NetworkChaos",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "action": "partition",
                "mode": "all",
                "direction": "both",
                "selector": {"namespaces": [namespace], "labelSelectors": {"app": "server"}},
                "target": {"mode": "all", "selector": {"namespaces": [namespace], "labelSelectors": {"app": "client"}}},
            },
        }
    )


@pytest.fixture(scope="module")
def workload(deployed: Deployed) -> tuple[int, str]:
    """A busybox httpd and a client pod in the targets' namespace: (the client's PID, the server's IP)."""
    d = deployed
    base = f"/apis/apps/v1/namespaces/{d.targets}/deployments"
    d.client.create(base, busybox("server", ["httpd", "-f", "-p", "8080"]))
    d.client.create(base, busybox("client", ["sleep", "3600"]))

    def running(app: str) -> Obj | None:
        pods = [
            p
            for p in d.pods(d.targets, f"app={app}")
            if all(c.get("ready") for c in (p.get("status") or {}).get("containerStatuses") or [{}])
        ]
        return pods[0] if pods else None

    server = d.client.wait_for(lambda: running("server"), timeout=90, what="server running")
    peer = d.client.wait_for(lambda: running("client"), timeout=90, what="client running")
    pid = container_pid(d.node, peer["status"]["containerStatuses"][0]["containerID"])
    ip: str = server["status"]["podIP"]
    d.client.wait_for(lambda: connects(pid, ip, 8080), timeout=30, what="client reaches server")
    return pid, ip


def test_a_partition_applied_with_kubectl_cuts_real_traffic_and_kubectl_delete_restores_it(
    deployed: Deployed, workload: tuple[int, str]
) -> None:
    d, (pid, ip) = deployed, workload
    path = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{d.targets}/networkchaos/cut"
    d.kubectl("apply", "-f", "-", input=networkchaos("cut", d.targets))
    d.eventually(lambda: not connects(pid, ip, 8080), 60, "traffic cut")

    def records() -> list[Obj]:
        found: list[Obj] = ((d.client.get(path) or {}).get("status") or {}).get("experiment", {}).get(
            "containerRecords"
        ) or []
        return found

    d.client.wait_for(
        lambda: len(records()) == 2 and all(r["phase"] == "Injected" for r in records()),
        timeout=60,
        what=f"status Injected: {records()}",
    )
    d.kubectl("delete", "-n", d.targets, "networkchaos", "cut", "--wait=false")
    d.eventually(lambda: connects(pid, ip, 8080), 60, "traffic restored")
    d.client.wait_for(lambda: d.client.get(path) is None, timeout=60, what="finalizer released, object gone")


@contextlib.contextmanager
def port_forward(d: Deployed, target: str, port: int) -> Iterator[int]:
    """`kubectl port-forward` to `target`, as dashboard.yaml says to reach the dashboard."""
    proc = subprocess.Popen(
        [str(d.plane.bin_dir / "kubectl"), "--kubeconfig", str(d.plane.kubeconfig), "-n", NS]
        + ["port-forward", target, f":{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert m, f"kubectl port-forward: {line} {proc.stderr.read() if proc.poll() is not None else ''}"
        yield int(m.group(1))
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_dashboard_service_answers_with_its_secrets_token_and_lists_the_experiment(
    deployed: Deployed, workload: tuple[int, str]
) -> None:
    d = deployed
    d.kubectl("apply", "-f", "-", input=networkchaos("seen-on-dashboard", d.targets))
    token = d.secret("chaosbus-dashboard-tokens", "viewer")
    try:
        with port_forward(d, "svc/chaosbus-dashboard", 2333) as port:
            base = f"http://127.0.0.1:{port}"
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
            with pytest.raises(urllib.error.HTTPError) as wrong:
                opener.open(
                    urllib.request.Request(
                        f"{base}/login", data=b"token=wrong", headers={"Origin": base}, method="POST"
                    ),
                    timeout=30,
                )
            assert wrong.value.code == 401
            page = opener.open(
                urllib.request.Request(
                    f"{base}/login",
                    data=urllib.parse.urlencode({"token": token}).encode(),
                    headers={"Origin": base},
                    method="POST",
                ),
                timeout=30,
            )
            assert page.geturl().rstrip("/") == base  # logged in: sent on to the experiments

            def listed() -> bool:
                html = opener.open(f"{base}/", timeout=30).read().decode()
                return "seen-on-dashboard" in html

            d.client.wait_for(listed, timeout=60, interval=1, what="the experiment on the dashboard")
    finally:
        d.kubectl("delete", "-n", d.targets, "networkchaos", "seen-on-dashboard", "--wait=false", check=False)


def injector_halted(d: Deployed) -> bool:
    ip = d.pod_ip("chaosbus-injector")
    text = urllib.request.urlopen(f"http://{ip}:9103/metrics", timeout=10).read().decode()
    return re.search(r"^chaosbus_injector_halted 1\.0$", text, re.M) is not None


def test_the_slo_guard_configured_as_documented_halts_and_the_partition_is_recovered(
    deployed: Deployed, workload: tuple[int, str]
) -> None:
    # Last in the module: the kill switch stays engaged (only an operator resumes).
    d, (pid, ip) = deployed, workload
    d.kubectl("apply", "-f", "-", input=networkchaos("guarded", d.targets))
    d.eventually(lambda: not connects(pid, ip, 8080), 60, "traffic cut")
    # An objective whose Prometheus nobody can reach: "not met" at the first evaluation.
    objective = {
        "name": "unreachable",
        "prometheus": "http://127.0.0.1:9",
        "query": "up",
        "criteria": "==",
        "value": 1,
        "interval": 1,
        "timeout": 1,
        "failures": 1,
    }
    config = d.work / "guard.yaml"
    config.write_text(yaml.safe_dump(objective))
    d.kubectl("-n", NS, "create", "configmap", "chaosbus-guard", f"--from-file=guard.yaml={config}")
    d.kubectl("-n", NS, "rollout", "restart", "deploy/chaosbus-guard")  # as docs/deploy.md says
    try:
        d.eventually(lambda: connects(pid, ip, 8080), 120, "the guard's halt recovering the partition")
        assert d.eventually(lambda: injector_halted(d), 30, "the node injector halted")
    finally:
        d.kubectl("delete", "-n", d.targets, "networkchaos", "guarded", "--wait=false", check=False)
