"""HTTPChaos rules as Chaos Mesh's proxy applies them: selection by port, path glob, method and
headers (and code/response headers for responses), and replace/patch rewrites. Pure."""

from __future__ import annotations

import json

from chaosbus.common.messages import Http, HttpPatch, HttpReplace
from chaosbus.injector.backends.httprules import (
    HttpRule,
    Request,
    Response,
    merge_patch,
    needs_body,
    path_of,
    request_rules,
    response_rules,
    rewrite_request,
    rewrite_response,
)


def req(
    target: bytes = b"/",
    method: bytes = b"GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes | None = None,
) -> Request:
    return Request(method=method, target=target, headers=headers or [(b"host", b"x")], body=body)


def rule(**kw: object) -> HttpRule:
    kw.setdefault("port", 80)
    return HttpRule(spec=Http(**kw))  # type: ignore[arg-type]


def test_path_glob_matches_the_whole_path_without_query() -> None:
    r = rule(path="/src/*")
    assert request_rules([r], 80, req(b"/src/a/b?x=1"), 0)
    assert not request_rules([r], 80, req(b"/src"), 0)
    assert request_rules([rule(path="/src?")], 80, req(b"/src/"), 0)
    assert not request_rules([rule(path="src")], 80, req(b"/src"), 0)
    assert request_rules([rule(path="/a[b]")], 80, req(b"/a[b]"), 0)  # no character classes
    assert path_of(b"http://h:80/p/q?x") == "/p/q"


def test_port_method_and_headers_select() -> None:
    r = rule(method="POST", request_headers={"X-Env": "test"})
    assert request_rules([r], 80, req(method=b"POST", headers=[(b"x-env", b"prod"), (b"x-env", b"test")]), 0)
    assert not request_rules([r], 80, req(method=b"GET", headers=[(b"x-env", b"test")]), 0)
    assert not request_rules([r], 80, req(method=b"POST"), 0)
    assert not request_rules([r], 81, req(method=b"POST", headers=[(b"x-env", b"test")]), 0)


def test_every_selecting_rule_acts_in_order_and_expired_rules_do_not() -> None:
    a, b = rule(delay_ns=1), rule(abort=True)
    expired = HttpRule(spec=Http(port=80, abort=True), until=10.0)
    assert request_rules([a, expired, b], 80, req(), 11.0) == [a, b]
    assert request_rules([expired], 80, req(), 9.0) == [expired]
    assert not request_rules([rule(target="Response")], 80, req(), 0)


def test_response_selection_uses_code_response_headers_and_the_request() -> None:
    r = rule(target="Response", path="/api", code=500, response_headers={"Content-Type": "text/plain"})
    resp = Response(status=500, reason=b"", headers=[(b"content-type", b"text/plain")])
    assert response_rules([r], 80, req(b"/api"), resp, 0)
    assert not response_rules([r], 80, req(b"/api"), Response(status=200, reason=b"", headers=resp.headers), 0)
    assert not response_rules([r], 80, req(b"/other"), resp, 0)


def test_replace_then_patch_on_a_request() -> None:
    spec = Http(
        port=80,
        replace=HttpReplace(
            path="/new", method="PUT", body=b'{"a":1}', queries={"a": "9", "b": "2"}, headers={"X-R": "1"}
        ),
        patch=HttpPatch(body_json='{"c":3}', queries=[["p", "1"], ["p", "2"]], headers=[["X-R", "2"]]),
    )
    out = rewrite_request(spec, req(b"/old?a=1&z=0", headers=[(b"x-r", b"0"), (b"content-length", b"3")], body=b"abc"))
    assert (out.method, out.target) == (b"PUT", b"/new?a=9&z=0&b=2&p=1&p=2")
    assert json.loads(out.body or b"") == {"a": 1, "c": 3}
    assert [v for k, v in out.headers if k == b"x-r"] == [b"1", b"2"]
    assert [v for k, v in out.headers if k == b"content-length"] == [str(len(out.body or b"")).encode()]


def test_empty_replace_path_is_the_root_and_keeps_the_query() -> None:
    assert rewrite_request(Http(port=80, replace=HttpReplace(path="")), req(b"/a?q=1")).target == b"/?q=1"


def test_response_replace_and_merge_patch() -> None:
    spec = Http(
        port=80,
        target="Response",
        replace=HttpReplace(code=418, headers={"Content-Type": "x"}),
        patch=HttpPatch(body_json='{"gone": null, "o": {"n": 1}}'),
    )
    resp = Response(
        status=200,
        reason=b"OK",
        headers=[(b"content-type", b"a"), (b"transfer-encoding", b"chunked")],
        body=b'{"gone": 1, "o": {"m": 0}}',
    )
    out = rewrite_response(spec, resp)
    assert (out.status, out.reason) == (418, b"I'm a Teapot")
    assert json.loads(out.body or b"") == {"o": {"m": 0, "n": 1}}
    assert (b"transfer-encoding", b"chunked") not in out.headers and (b"content-type", b"x") in out.headers


def test_merge_patch_is_rfc_7396() -> None:
    doc = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert merge_patch(doc, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch([1], {"a": 1}) == {"a": 1}
    assert merge_patch({"a": 1}, [2]) == [2]


def test_only_body_rewrites_need_the_whole_body() -> None:
    assert not needs_body([rule(abort=True), rule(delay_ns=5), rule(replace=HttpReplace(code=500))])
    assert needs_body([rule(replace=HttpReplace(body=b""))])
    assert needs_body([rule(patch=HttpPatch(body_json="{}"))])


def test_an_empty_replacement_body_is_framed_as_empty() -> None:
    spec = Http(port=80, target="Response", replace=HttpReplace(body=b""))
    out = rewrite_response(spec, Response(status=200, reason=b"OK", headers=[(b"content-length", b"5")], body=b""))
    assert out.headers == [(b"content-length", b"0")] and out.body == b""
