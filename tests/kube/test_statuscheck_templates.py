"""StatusCheck templates on a Kubernetes API server: the ConfigMap `chaosbus template statuscheck
create -o yaml` prints is what Chaos Mesh's dashboard would find (its labels select it, it is named
after its template), and what the server hands back reads as the same template.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from kube.conftest import KubeEnv

from chaosbus.common.crd import sctemplates

pytestmark = pytest.mark.integration


def test_a_printed_template_is_stored_and_selected_as_chaos_mesh_selects_it(kube: KubeEnv, tmp_path: object) -> None:
    spec = {
        "mode": "Continuous",
        "intervalSeconds": 3,
        "http": {"url": "http://web.default/health", "criteria": {"statusCode": "200-399"}},
    }
    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaosbus.cli",
            "template",
            "statuscheck",
            "create",
            "web-ok",
            "-f",
            "-",
            "-n",
            kube.namespace,
            "--description",
            "web answers",
            "-o",
            "yaml",
        ],
        input=yaml.safe_dump(spec),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    cm = yaml.safe_load(printed)
    kube.client.create(f"/api/v1/namespaces/{kube.namespace}/configmaps", cm)

    listed = kube.client.get(
        f"/api/v1/namespaces/{kube.namespace}/configmaps",
        labelSelector="template.chaos-mesh.org/type=StatusCheck,app.kubernetes.io/managed-by=chaos-mesh",
    )
    assert listed is not None
    items = listed["items"]
    assert [i["metadata"]["name"] for i in items] == ["template-status-check-web-ok"]
    template = sctemplates.read({"apiVersion": "v1", "kind": "ConfigMap", **items[0]})
    assert (template.name, template.namespace, template.description) == ("web-ok", kube.namespace, "web answers")
    assert template.uid == items[0]["metadata"]["uid"] and template.created
    assert template.spec["mode"] == "Continuous" and template.spec["intervalSeconds"] == 3
    assert template.spec["http"]["criteria"] == {"statusCode": "200-399"}
