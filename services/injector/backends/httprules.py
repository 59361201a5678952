"""HTTPChaos rules: which HTTP messages a pod's experiments select and what they make of them. Pure.

As Chaos Mesh's proxy (chaos-tproxy): a rule selects a request by port, path (a glob over the
path without its query: `*` any run of characters, `/` included, `?` one character), method and
request headers (each given header has that exact value among the message's values of it); a
response by those of its request (as the request rules left it) plus its status code and
response headers. EVERY rule that selects a message acts on it, in the order the rules were
added, each one abort -> delay -> replace -> patch; abort ends the exchange. Aborting and waiting
are the proxy's to do; this module rewrites messages.
"""

from __future__ import annotations

import http
import json
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from chaosbus.common.faultspecs import Http

Headers = list[tuple[bytes, bytes]]  # (lower-case name, value), as h11 gives them


@dataclass(frozen=True)
class HttpRule:
    """One experiment's rule on a pod, live until `until` (epoch seconds; None: until removed)."""

    spec: Http
    until: float | None = None

    def live(self, now: float) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True)
class Request:
    method: bytes
    target: bytes  # the request target as sent: origin form `/path?query` (or absolute form)
    headers: Headers
    body: bytes | None = None  # None: not read (streamed through)


@dataclass(frozen=True)
class Response:
    status: int
    reason: bytes
    headers: Headers
    body: bytes | None = None


@cache
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z", re.DOTALL
    )


def path_of(target: bytes) -> str:
    text = target.decode("latin-1")
    if "://" in text:  # absolute form (a request to a proxy): its path
        text = urllib.parse.urlsplit(text).path or "/"
    return text.split("?", 1)[0]


def _has_headers(want: dict[str, str], headers: Headers) -> bool:
    for name, value in want.items():
        key, val = name.lower().encode("latin-1"), value.encode("latin-1")
        if not any(k == key and v == val for k, v in headers):
            return False
    return True


def _selects_request(spec: Http, port: int, req: Request) -> bool:
    return (
        spec.port == port
        and (spec.path is None or _glob(spec.path).match(path_of(req.target)) is not None)
        and (spec.method is None or spec.method.encode("latin-1") == req.method)
        and _has_headers(spec.request_headers, req.headers)
    )


def request_rules(rules: Iterable[HttpRule], port: int, req: Request, now: float) -> list[HttpRule]:
    """The live `Request` rules that select `req`, arrived on TCP `port`."""
    return [r for r in rules if r.spec.target == "Request" and r.live(now) and _selects_request(r.spec, port, req)]


def response_rules(rules: Iterable[HttpRule], port: int, req: Request, resp: Response, now: float) -> list[HttpRule]:
    """The live `Response` rules that select `resp` to `req` (as forwarded)."""
    return [
        r
        for r in rules
        if r.spec.target == "Response"
        and r.live(now)
        and _selects_request(r.spec, port, req)
        and (r.spec.code is None or r.spec.code == resp.status)
        and _has_headers(r.spec.response_headers, resp.headers)
    ]


def needs_body(rules: Iterable[HttpRule]) -> bool:
    """Whether acting on a message needs its whole body (one of the rules replaces or patches it);
    otherwise the body streams through."""
    return any(
        (r.spec.patch is not None and r.spec.patch.body_json is not None)
        or (r.spec.replace is not None and r.spec.replace.body is not None)
        for r in rules
    )


def rewrite_request(spec: Http, req: Request) -> Request:
    """`replace` then `patch` of one rule on a request (abort and delay are the caller's)."""
    target, method, headers, body = req.target, req.method, list(req.headers), req.body
    reframe = False
    if (r := spec.replace) is not None:
        if r.path is not None:
            target = _with_path(target, r.path or "/")
        if r.method is not None:
            method = r.method.encode("latin-1")
        if r.body is not None:
            body, reframe = r.body, True
        if r.queries:
            target = _replace_queries(target, r.queries)
        headers = _set_headers(headers, r.headers)
    if (p := spec.patch) is not None:
        if p.queries:
            target = _append_queries(target, p.queries)
        if p.body_json is not None:
            body, reframe = merge_json(body or b"", p.body_json), True
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in p.headers]
    if reframe:
        headers = _framed(headers, body or b"")
    return Request(method=method, target=target, headers=headers, body=body)


def rewrite_response(spec: Http, resp: Response) -> Response:
    """`replace` then `patch` of one rule on a response (code, body, headers)."""
    status, reason, headers, body = resp.status, resp.reason, list(resp.headers), resp.body
    reframe = False
    if (r := spec.replace) is not None:
        if r.code is not None and r.code != status:
            status, reason = r.code, _reason(r.code)
        if r.body is not None:
            body, reframe = r.body, True
        headers = _set_headers(headers, r.headers)
    if (p := spec.patch) is not None:
        if p.body_json is not None:
            body, reframe = merge_json(body or b"", p.body_json), True
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in p.headers]
    if reframe:
        headers = _framed(headers, body or b"")
    return replace(resp, status=status, reason=reason, headers=headers, body=body)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def merge_json(body: bytes, patch_text: str) -> bytes:
    """The body with the merge patch applied; a body that is not JSON counts as no document."""
    try:
        doc = json.loads(body) if body.strip() else None
    except ValueError:
        doc = None
    return json.dumps(merge_patch(doc, json.loads(patch_text)), separators=(",", ":")).encode()


def _reason(code: int) -> bytes:
    try:
        return http.HTTPStatus(code).phrase.encode()
    except ValueError:
        return b""


def _set_headers(headers: Headers, values: dict[str, str]) -> Headers:
    for name, value in values.items():
        key = name.lower().encode("latin-1")
        headers = [(k, v) for k, v in headers if k != key] + [(key, value.encode("latin-1"))]
    return headers


def _framed(headers: Headers, body: bytes) -> Headers:
    """Headers for a body of a new length: its Content-Length, no Transfer-Encoding."""
    kept = [(k, v) for k, v in headers if k not in (b"content-length", b"transfer-encoding")]
    return [*kept, (b"content-length", str(len(body)).encode())]


def _split(target: bytes) -> tuple[str, str, str | None]:
    """(scheme://authority prefix, path, query or None)."""
    text = target.decode("latin-1")
    prefix = ""
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        prefix, text = f"{parts.scheme}://{parts.netloc}", text[len(f"{parts.scheme}://{parts.netloc}") :]
    path, sep, query = text.partition("?")
    return prefix, path, query if sep else None


def _join(prefix: str, path: str, query: str | None) -> bytes:
    return (prefix + path + (f"?{query}" if query is not None else "")).encode("latin-1")


def _with_path(target: bytes, path: str) -> bytes:
    prefix, _, query = _split(target)
    return _join(prefix, path, query)


def _replace_queries(target: bytes, queries: dict[str, str]) -> bytes:
    prefix, path, query = _split(target)
    merged = dict(urllib.parse.parse_qsl(query or "", keep_blank_values=True))
    merged.update(queries)
    return _join(prefix, path, urllib.parse.urlencode(merged) or None)


def _append_queries(target: bytes, pairs: list[list[str]]) -> bytes:
    prefix, path, query = _split(target)
    extra = urllib.parse.urlencode([(k, v) for k, v in pairs])
    return _join(prefix, path, f"{query}&{extra}" if query is not None else extra)
