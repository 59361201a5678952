"""HTTPChaos: Chaos Mesh's HTTP faults on one port of the selected pods (`target: Request` or
`Response`; the selectors `path` (glob), `method`, `code`, `request_headers`, `response_headers`;
the actions `abort`, `delay`, `replace` and `patch`, applied in that order). `tls` is accepted and
refused per target by the injector. Pure: the spec, its admission checks and its planner.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING, Any, Self

import msgspec

from chaosbus.common import faultspecs as fs
from chaosbus.common.crd import bounds
from chaosbus.common.crd.common import PodSelectorBase, with_default_namespace
from chaosbus.common.crd.errors import Problems
from chaosbus.common.durations import parse_duration

if TYPE_CHECKING:
    from chaosbus.common.faultplan import Selected

TARGETS = ("Request", "Response")
# Chaos Mesh's webhook accepts these methods for `target: Request` (Go's net/http constants).
REQUEST_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT")
MAX_HEADERS = 64  # per map or list: every one is compared on every request the proxy sees
MAX_TEXT = 8192  # a path, header value, query or glob
MAX_BODY = 1024 * 1024  # a replacement body or a JSON merge patch, decoded
MAX_DELAY_S = 3600.0  # a delay holds the connection open; an hour is far past any client's timeout
# RFC 9110 token: header names and methods.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class _S(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, forbid_unknown_fields=True):
    pass


class PatchBody(_S):
    type: str = ""
    value: str = ""


class HTTPPatch(_S):
    body: PatchBody | None = None
    queries: list[list[str]] = []
    headers: list[list[str]] = []


class HTTPReplace(_S):
    path: str | None = None
    method: str | None = None
    code: int | None = None
    body: str = ""  # base64, as Chaos Mesh's []byte
    queries: dict[str, str] = {}
    headers: dict[str, str] = {}


class HTTPTLS(_S):
    secret_name: str = ""
    secret_namespace: str = ""
    cert_name: str = ""
    key_name: str = ""
    ca_name: str | None = None


class HTTPChaosSpec(PodSelectorBase, kw_only=True):
    target: str = ""
    port: int = 0
    path: str | None = None
    method: str | None = None
    code: int | None = None
    # Chaos Mesh spells these two in snake case.
    request_headers: dict[str, str] = msgspec.field(default_factory=dict, name="request_headers")
    response_headers: dict[str, str] = msgspec.field(default_factory=dict, name="response_headers")
    abort: bool | None = None
    delay: str | None = None
    replace: HTTPReplace | None = None
    patch: HTTPPatch | None = None
    tls: HTTPTLS | None = None

    def validate(self) -> None:
        problems = Problems()
        problems.one_of("spec.target", self.target, TARGETS)
        self.check_common(problems)
        if not 0 < self.port < 65536:
            problems.add("spec.port", f"expected a TCP port in [1, 65535], got {self.port}")
        if self.path is not None:
            _text(problems, "spec.path", self.path)
        if self.method is not None:
            if self.target == "Request" and self.method not in REQUEST_METHODS:
                problems.add(
                    "spec.method",
                    f"method {bounds.show(self.method)} is not supported (one of {', '.join(REQUEST_METHODS)})",
                )
            elif not _TOKEN.match(self.method):
                problems.add("spec.method", f"expected an HTTP method, got {bounds.show(self.method)}")
        _code(problems, "spec.code", self.code)
        _header_map(problems, "spec.request_headers", self.request_headers)
        _header_map(problems, "spec.response_headers", self.response_headers)
        if self.delay is not None:
            try:
                seconds = parse_duration(self.delay)
                if not 0 <= seconds <= MAX_DELAY_S:
                    problems.add("spec.delay", f"must be between 0 and 1h, got {bounds.show(self.delay)}")
            except ValueError as e:
                problems.add("spec.delay", str(e))
        if self.replace is not None:
            _replace(problems, self.replace)
        if self.patch is not None:
            _patch(problems, self.patch)
        problems.raise_if_any()

    def defaulted(self, namespace: str) -> Self:
        return with_default_namespace(self, namespace)  # type: ignore[return-value]


def _text(problems: Problems, path: str, value: str) -> None:
    if len(value) > MAX_TEXT or any(c in value for c in "\r\n\0"):
        problems.add(path, f"at most {MAX_TEXT} characters, no CR, LF or NUL, got {bounds.show(value)}")


def _code(problems: Problems, path: str, code: int | None, low: int = 100) -> None:
    if code is not None and not low <= code <= 999:
        problems.add(path, f"expected an HTTP status code in [{low}, 999], got {code}")


def _header(problems: Problems, path: str, name: str, value: str) -> None:
    if not _TOKEN.match(name):
        problems.add(path, f"expected a header name, got {bounds.show(name)}")
    _text(problems, f"{path}[{name[:40]}]", value)


def _header_map(problems: Problems, path: str, headers: dict[str, str]) -> None:
    if len(headers) > MAX_HEADERS:
        problems.add(path, f"at most {MAX_HEADERS} headers, got {len(headers)}")
    for name, value in list(headers.items())[:MAX_HEADERS]:
        _header(problems, path, name, value)


def _pairs(problems: Problems, path: str, pairs: list[list[str]], headers: bool) -> None:
    if len(pairs) > MAX_HEADERS:
        problems.add(path, f"at most {MAX_HEADERS} entries, got {len(pairs)}")
    for i, pair in enumerate(pairs[:MAX_HEADERS]):
        if len(pair) != 2:
            problems.add(f"{path}[{i}]", f"expected [name, value], got {len(pair)} item(s)")
        elif headers:
            _header(problems, f"{path}[{i}]", pair[0], pair[1])
        else:
            _text(problems, f"{path}[{i}]", pair[0] + pair[1])


def _replace(problems: Problems, r: HTTPReplace) -> None:
    if r.path is not None:
        _text(problems, "spec.replace.path", r.path)
    if r.method is not None and not _TOKEN.match(r.method):
        problems.add("spec.replace.method", f"expected an HTTP method, got {bounds.show(r.method)}")
    _code(problems, "spec.replace.code", r.code, low=200)  # a final answer: 1xx cannot end an exchange
    if r.body and replace_body(r.body) is None:
        problems.add("spec.replace.body", f"expected base64 of at most {MAX_BODY} bytes (Chaos Mesh's []byte)")
    _header_map(problems, "spec.replace.headers", r.headers)
    if len(r.queries) > MAX_HEADERS:
        problems.add("spec.replace.queries", f"at most {MAX_HEADERS} queries, got {len(r.queries)}")
    for k, v in list(r.queries.items())[:MAX_HEADERS]:
        _text(problems, f"spec.replace.queries[{k[:40]}]", k + v)


def _patch(problems: Problems, p: HTTPPatch) -> None:
    if p.body is not None:
        if p.body.type != "JSON":
            problems.add(
                "spec.patch.body.type",
                f"expected JSON (the only patch Chaos Mesh knows), got {bounds.show(p.body.type)}",
            )
        if len(p.body.value) > MAX_BODY:
            problems.add("spec.patch.body.value", f"at most {MAX_BODY} characters")
        else:
            try:
                json.loads(p.body.value)
            except ValueError as e:
                problems.add("spec.patch.body.value", f"expected a JSON document (RFC 7396 merge patch): {e}")
    _pairs(problems, "spec.patch.queries", p.queries, headers=False)
    _pairs(problems, "spec.patch.headers", p.headers, headers=True)


def replace_body(text: str) -> bytes | None:
    """The bytes a base64 `replace.body` stands for; None when it is not base64 or too long."""
    if len(text) > MAX_BODY * 4 // 3 + 4:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def plan(obj: Any, target: Selected, everyone: Any) -> fs.Http:
    """One pod's proxy rule: the spec as the injector needs it (durations in nanoseconds, the
    replacement body decoded)."""
    spec = obj.spec
    assert isinstance(spec, HTTPChaosSpec)
    replace = None
    if spec.replace is not None:
        r = spec.replace
        replace = fs.HttpReplace(
            path=r.path,
            method=r.method,
            code=r.code,
            body=replace_body(r.body) if r.body else None,
            queries=dict(r.queries),
            headers=dict(r.headers),
        )
    patch = None
    if spec.patch is not None:
        p = spec.patch
        patch = fs.HttpPatch(
            body_json=p.body.value if p.body is not None else None,
            queries=[list(q) for q in p.queries],
            headers=[list(h) for h in p.headers],
        )
    return fs.Http(
        target=spec.target,  # type: ignore[arg-type]
        port=spec.port,
        path=spec.path,
        method=spec.method,
        code=spec.code,
        request_headers=dict(spec.request_headers),
        response_headers=dict(spec.response_headers),
        abort=bool(spec.abort),
        delay_ns=round(parse_duration(spec.delay) * 1e9) if spec.delay else 0,
        replace=replace,
        patch=patch,
        tls=spec.tls is not None,
    )
