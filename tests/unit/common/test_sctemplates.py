"""StatusCheck templates in Chaos Mesh's ConfigMap format: the exact shape its dashboard writes and
reads, the spec checked as a StatusCheck's, and local admission keeping no other ConfigMap."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from chaosbus.common import admission
from chaosbus.common.crd import InvalidObject, sctemplates

SPEC = {
    "mode": "Synchronous",
    "type": "HTTP",
    "intervalSeconds": 1,
    "http": {"url": "http://web/health", "criteria": {"statusCode": "200-299"}},
}


def dashboard_configmap(name: str, spec_text: str) -> dict[str, Any]:
    """As Chaos Mesh's dashboard creates one (defaults filled, yaml.v3 output)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"template-status-check-{name}",
            "namespace": "team-a",
            "labels": {"template.chaos-mesh.org/type": "StatusCheck", "app.kubernetes.io/managed-by": "chaos-mesh"},
            "annotations": {
                "template.chaos-mesh.org/name": name,
                "template.chaos-mesh.org/description": "from the dashboard",
            },
        },
        "data": {"spec": spec_text},
    }


def test_a_new_template_is_the_configmap_chaos_mesh_writes() -> None:
    cm = sctemplates.configmap("team-a", "web-ok", SPEC, "web answers 2xx")
    assert cm["metadata"] == {
        "name": "template-status-check-web-ok",
        "namespace": "team-a",
        "labels": {"template.chaos-mesh.org/type": "StatusCheck", "app.kubernetes.io/managed-by": "chaos-mesh"},
        "annotations": {
            "template.chaos-mesh.org/name": "web-ok",
            "template.chaos-mesh.org/description": "web answers 2xx",
        },
    }
    # The spec as Chaos Mesh's dashboard writes it (yaml.v3: Go field names lowercased, embedded
    # structs nested), so its dashboard reads chaosbus's templates.
    go = yaml.safe_load(cm["data"]["spec"])["statuscheckspec"]
    assert go["intervalseconds"] == 1 and go["failurethreshold"] == 3 and go["mode"] == "Synchronous"
    assert go["embedstatuscheck"]["httpstatuscheck"] == {
        "requesturl": "http://web/health",
        "requestmethod": "GET",
        "criteria": {"statuscode": "200-299"},
    }
    template = sctemplates.read(cm)
    assert (template.name, template.namespace, template.description) == ("web-ok", "team-a", "web answers 2xx")
    check = sctemplates.statuscheck(template, "nightly-check")
    assert check["kind"] == "StatusCheck" and check["metadata"]["namespace"] == "team-a"
    assert check["spec"]["http"] == {**SPEC["http"], "method": "GET"} and check["spec"]["intervalSeconds"] == 1


def test_a_template_chaos_mesh_wrote_is_read() -> None:
    text = (
        "statuscheckspec:\n  mode: Continuous\n  type: HTTP\n  duration: null\n  timeoutseconds: 2\n"
        "  intervalseconds: 5\n  failurethreshold: 4\n  successthreshold: 1\n  recordshistorylimit: 100\n"
        "  embedstatuscheck:\n    httpstatuscheck:\n      requesturl: http://web/health\n"
        '      requestmethod: POST\n      requestheaders: {}\n      requestbody: ""\n'
        '      criteria:\n        statuscode: "200"\n'
    )
    template = sctemplates.read(dashboard_configmap("web", text))
    assert template.spec == {
        "mode": "Continuous",
        "type": "HTTP",
        "timeoutSeconds": 2,
        "intervalSeconds": 5,
        "failureThreshold": 4,
        "http": {"url": "http://web/health", "method": "POST", "criteria": {"statusCode": "200"}},
    }


def test_a_hand_written_camel_case_template_is_read() -> None:
    template = sctemplates.read(dashboard_configmap("web", yaml.safe_dump(SPEC)))
    assert template.spec["http"]["criteria"] == {"statusCode": "200-299"} and template.spec["intervalSeconds"] == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda cm: cm["data"].update(spec="http:\n  url: http://x/\nprobe: 1\n"), "data.spec.probe: unknown field"),
        (
            lambda cm: cm["data"].update(spec="statuscheckspec:\n  timeoutsecs: 1\n"),
            "data.spec.timeoutsecs: unknown field",
        ),
        (lambda cm: cm["data"].update(spec="intervalSeconds: soon\n"), "data.spec.intervalSeconds"),
        (lambda cm: cm["data"].update(spec="- a list\n"), "data.spec: must be a mapping"),
        (lambda cm: cm["data"].update(spec="a: &a [*a]\n"), "data.spec"),
        (lambda cm: cm.pop("data"), "data.spec: required"),
        (lambda cm: cm["metadata"].update(name="template-status-check-other"), "not a StatusCheck template"),
        (lambda cm: cm["metadata"]["labels"].pop("app.kubernetes.io/managed-by"), "not a StatusCheck template"),
    ],
)
def test_a_broken_template_is_refused_naming_the_field(change: Any, field: str) -> None:
    cm = sctemplates.configmap("team-a", "web", SPEC)
    change(cm)
    with pytest.raises(InvalidObject) as err:
        sctemplates.read(cm)
    assert field in " ".join(err.value.errors)


def test_local_admission_keeps_templates_and_refuses_any_other_configmap() -> None:
    stored = admission.admit(sctemplates.configmap("team-a", "web", SPEC))
    assert stored["metadata"]["name"] == "template-status-check-web"
    with pytest.raises(InvalidObject, match="only StatusCheck templates"):
        admission.admit({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {}})
    bad = sctemplates.configmap("team-a", "web", SPEC)
    bad["data"]["spec"] = "http:\n  url: http://x/\n  verb: GET\n"
    with pytest.raises(InvalidObject, match="data.spec.http.verb: unknown field"):
        admission.admit(bad)
    with pytest.raises(InvalidObject, match="name"):
        sctemplates.configmap("team-a", "Not_A_Name", SPEC)
