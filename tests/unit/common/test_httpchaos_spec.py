"""HTTPChaos admission and planning: Chaos Mesh's fields (snake-case header selectors, base64
replace body, JSON merge patch), each bad field refused by name, and the per-pod fault."""

from __future__ import annotations

from typing import Any

import pytest

from chaosbus.common import messages as m
from chaosbus.common.crd import InvalidObject, decode_object
from chaosbus.common.crd.httpchaos import HTTPChaosSpec, plan
from chaosbus.common.crd.objects import ChaosObject
from chaosbus.common.faultplan import Selected


def decode(**spec: Any) -> ChaosObject:
    spec.setdefault("mode", "all")
    spec.setdefault("selector", {"labelSelectors": {"app": "web"}})
    spec.setdefault("target", "Request")
    spec.setdefault("port", 8080)
    obj = decode_object(
        {
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "HTTPChaos",
            "metadata": {"name": "h", "namespace": "default"},
            "spec": spec,
        }
    )
    assert isinstance(obj.spec, HTTPChaosSpec)
    return obj


def errors(**spec: Any) -> list[str]:
    with pytest.raises(InvalidObject) as info:
        decode(**spec)
    return info.value.errors


def fault(obj: ChaosObject) -> m.Http:
    pod = m.TargetPod(namespace="default", name="web-0", uid="u", pod_ip="10.0.0.1", node="n")
    return plan(obj, Selected(record_id="default/web-0", selector_key=".", pod=pod), [])


def test_chaos_mesh_example_decodes_and_plans() -> None:
    obj = decode(
        target="Response",
        port=80,
        path="/api/*",
        method="GET",
        code=200,
        request_headers={"X-A": "1"},
        response_headers={"Content-Type": "application/json"},
        abort=False,
        delay="500ms",
        replace={
            "code": 503,
            "body": "eyJhIjogMX0=",
            "headers": {"X-R": "y"},
            "queries": {"q": "1"},
            "path": "/v2",
            "method": "POST",
        },
        patch={"body": {"type": "JSON", "value": '{"b": 2}'}, "queries": [["p", "1"]], "headers": [["X-P", "1"]]},
        duration="30s",
    )
    got = fault(obj)
    assert got == m.Http(
        target="Response",
        port=80,
        path="/api/*",
        method="GET",
        code=200,
        request_headers={"X-A": "1"},
        response_headers={"Content-Type": "application/json"},
        delay_ns=500_000_000,
        replace=m.HttpReplace(
            path="/v2", method="POST", code=503, body=b'{"a": 1}', queries={"q": "1"}, headers={"X-R": "y"}
        ),
        patch=m.HttpPatch(body_json='{"b": 2}', queries=[["p", "1"]], headers=[["X-P", "1"]]),
    )
    assert obj.spec.selector.namespaces == ["default"]  # type: ignore[union-attr]


def test_tls_is_accepted_and_carried_to_the_injector() -> None:
    obj = decode(abort=True, tls={"secretName": "s", "secretNamespace": "ns", "certName": "c", "keyName": "k"})
    assert fault(obj).tls is True


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"target": "Both"}, "spec.target: expected one of Request, Response"),
        ({"port": 0}, "spec.port: expected a TCP port"),
        ({"port": 70000}, "spec.port: expected a TCP port"),
        ({"method": "FETCH"}, "spec.method: method 'FETCH' is not supported"),
        ({"code": 42}, "spec.code: expected an HTTP status code"),
        ({"delay": "soon"}, "spec.delay: invalid duration"),
        ({"delay": "-1s"}, "spec.delay: must be between 0 and 1h"),
        ({"request_headers": {"Bad Name": "x"}}, "spec.request_headers: expected a header name"),
        ({"response_headers": {"X": "a\r\nb"}}, "spec.response_headers[X]: at most"),
        ({"path": "/a\nb"}, "spec.path: at most"),
        ({"replace": {"body": "not base64!"}}, "spec.replace.body: expected base64"),
        ({"replace": {"code": 7}}, "spec.replace.code: expected an HTTP status code"),
        ({"patch": {"body": {"type": "XML", "value": "<a/>"}}}, "spec.patch.body.type: expected JSON"),
        ({"patch": {"body": {"type": "JSON", "value": "{nope"}}}, "spec.patch.body.value: expected a JSON document"),
        ({"patch": {"queries": [["only-one"]]}}, "spec.patch.queries[0]: expected [name, value]"),
        ({"patch": {"headers": [["Bad Name", "v"]]}}, "spec.patch.headers[0]: expected a header name"),
        ({"requestHeaders": {"a": "b"}}, "requestHeaders"),  # Chaos Mesh spells it request_headers
    ],
)
def test_bad_fields_are_refused_by_name(spec: dict[str, Any], message: str) -> None:
    found = errors(**spec)
    assert any(message in e for e in found), found


def test_response_methods_are_not_limited_to_the_request_list() -> None:
    assert fault(decode(target="Response", method="PROPFIND")).method == "PROPFIND"
