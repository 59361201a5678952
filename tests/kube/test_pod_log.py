"""`pods/{name}/log` in the API fake and Task Pods in the test kubelet: a Pod created by someone
else runs its containers' command + args as processes, reports Running then Succeeded/Failed with
each container's exit code, and its output is served as the container log (text/plain; the
`container` parameter, required when the Pod has several; 400 for a container not yet started or
not in the Pod; 404 for a missing Pod; `tailLines` then `limitBytes`). Fake-only: a real cluster's
logs come from its own kubelets.
"""

from __future__ import annotations

import http.client
import json
import sys
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from kube.conftest import KubeEnv
from kube.kubelet import Kubelet

PY = sys.executable


@pytest.fixture
def kubelet(kube: KubeEnv) -> Iterator[Kubelet]:
    fake = kube.need_fake("the test kubelet serves container logs through the fake")
    k = Kubelet(kube.client, "log-node", logs=fake.set_container_log)
    yield k
    k.close()


def create(kube: KubeEnv, name: str, containers: list[dict[str, Any]], node: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": containers, **({"nodeName": node} if node else {})}
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    created: dict[str, Any] = kube.client.create(f"/api/v1/namespaces/{kube.namespace}/pods", body)
    return created


def finished(kube: KubeEnv, kubelet: Kubelet, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        kubelet.sync()
        pod = kube.client.get(f"/api/v1/namespaces/{kube.namespace}/pods/{name}")
        return pod if pod and pod["status"].get("phase") in ("Succeeded", "Failed") else None

    result: dict[str, Any] = kube.client.wait_for(done, timeout=20, what=f"pod {name} finished")
    return result


def log(kube: KubeEnv, name: str, **query: str) -> tuple[int, str, str]:
    c = kube.client
    conn = http.client.HTTPConnection(c.host, c.port, timeout=10)
    qs = f"?{urllib.parse.urlencode(query)}" if query else ""
    conn.request("GET", f"/api/v1/namespaces/{kube.namespace}/pods/{name}/log{qs}", headers=c.headers)
    resp = conn.getresponse()
    out = resp.status, resp.getheader("Content-Type", ""), resp.read().decode()
    conn.close()
    return out


def container(name: str, code: str) -> dict[str, Any]:
    return {"name": name, "image": "python:3.12", "command": [PY, "-c"], "args": [code]}


def test_a_pod_runs_to_completion_and_its_log_is_served(kube: KubeEnv, kubelet: Kubelet) -> None:
    pod = create(
        kube,
        "two",
        [
            container("a", "print('a1'); print('a2'); print('a3')"),
            container("b", "import sys; print('b-out'); sys.stderr.write('b-err\\n'); exit(4)"),
        ],
    )
    done = finished(kube, kubelet, "two")
    assert done["status"]["phase"] == "Failed"  # one container exited non-zero
    states = {s["name"]: s["state"]["terminated"] for s in done["status"]["containerStatuses"]}
    assert (states["a"]["exitCode"], states["a"]["reason"]) == (0, "Completed")
    assert (states["b"]["exitCode"], states["b"]["reason"]) == (4, "Error")
    status, ctype, body = log(kube, "two", container="a")
    assert (status, ctype.split(";")[0], body) == (200, "text/plain", "a1\na2\na3\n")
    assert log(kube, "two", container="b")[2] == "b-out\nb-err\n"  # stdout and stderr, as a runtime logs them
    assert log(kube, "two", container="a", tailLines="2")[2] == "a2\na3\n"
    assert log(kube, "two", container="a", tailLines="2", limitBytes="4")[2] == "a2\na"
    status, _, body = log(kube, "two")
    assert (
        status == 400
        and json.loads(body)["message"] == "a container name must be specified for pod two, choose one of: [a b]"
    )
    status, _, body = log(kube, "two", container="c")
    assert status == 400 and json.loads(body)["message"] == "container c is not valid for pod two"
    assert pod["metadata"]["uid"] == done["metadata"]["uid"]


def test_a_missing_pod_is_404_and_a_container_not_started_is_400(kube: KubeEnv, kubelet: Kubelet) -> None:
    status, _, body = log(kube, "nobody")
    assert status == 404 and json.loads(body)["reason"] == "NotFound"
    create(kube, "elsewhere", [container("main", "print(1)")], node="another-node")  # not this kubelet's
    kubelet.sync()
    status, _, body = log(kube, "elsewhere")
    assert status == 400
    assert json.loads(body)["message"] == 'container "main" in pod "elsewhere" is waiting to start: ContainerCreating'


def test_a_command_that_cannot_start_fails_the_pod_with_exit_code_128(kube: KubeEnv, kubelet: Kubelet) -> None:
    create(kube, "nocmd", [{"name": "main", "image": "busybox", "command": ["/nonexistent/binary"]}])
    done = finished(kube, kubelet, "nocmd")
    term = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert done["status"]["phase"] == "Failed" and term["exitCode"] == 128 and term["reason"] == "StartError"
    assert "/nonexistent/binary" in term["message"]


def test_an_image_reference_that_does_not_parse_stays_pending_with_no_log(kube: KubeEnv, kubelet: Kubelet) -> None:
    create(kube, "badimg", [{"name": "main", "image": "Not A/Valid:Ref", "command": ["true"]}])
    kubelet.sync()
    pod = kube.client.get(f"/api/v1/namespaces/{kube.namespace}/pods/badimg")
    assert pod is not None and pod["status"]["phase"] == "Pending"
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "InvalidImageName"
    status, _, body = log(kube, "badimg")
    assert status == 400 and json.loads(body)["message"].endswith("is waiting to start: InvalidImageName")
