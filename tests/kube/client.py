"""A small synchronous Kubernetes REST client for tests (fixtures, the kubelet helper, assertions),
configured from a kubeconfig: server, token or client certificate, CA or insecure-skip-tls-verify.
Works the same against the in-repo fake and a real API server.
"""

from __future__ import annotations

import base64
import copy
import http.client
import json
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]


class KubeError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


def _data_file(data: str, suffix: str) -> str:
    f = tempfile.NamedTemporaryFile("wb", suffix=suffix, delete=False)
    f.write(base64.b64decode(data))
    f.close()
    return f.name


class KubeClient:
    def __init__(self, kubeconfig: Path) -> None:
        cfg = yaml.safe_load(kubeconfig.read_text())
        ctx_name = cfg.get("current-context")
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next((u["user"] for u in cfg.get("users", []) if u["name"] == ctx.get("user")), {})
        url = urllib.parse.urlsplit(cluster["server"])
        self.scheme, self.host, self.port = url.scheme, url.hostname or "127.0.0.1", url.port
        self.prefix = url.path.rstrip("/")
        self.headers = {"Accept": "application/json"}
        if user.get("token"):
            self.headers["Authorization"] = f"Bearer {user['token']}"
        self.ssl: ssl.SSLContext | None = None
        if self.scheme == "https":
            self.ssl = ssl.create_default_context()
            if cluster.get("insecure-skip-tls-verify"):
                self.ssl.check_hostname, self.ssl.verify_mode = False, ssl.CERT_NONE
            elif cluster.get("certificate-authority-data"):
                self.ssl.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
            elif cluster.get("certificate-authority"):
                self.ssl.load_verify_locations(cluster["certificate-authority"])
            cert = user.get("client-certificate") or (
                user.get("client-certificate-data") and _data_file(user["client-certificate-data"], ".crt")
            )
            key = user.get("client-key") or (
                user.get("client-key-data") and _data_file(user["client-key-data"], ".key")
            )
            if cert and key:
                self.ssl.load_cert_chain(cert, key)

    def impersonating(self, user: str) -> KubeClient:
        """The same client acting as `user` (the kubeconfig's identity must be allowed to impersonate)."""
        other = copy.copy(self)
        other.headers = {**self.headers, "Impersonate-User": user}
        return other

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
        ok: tuple[int, ...] = (),
    ) -> Any:
        """Send one request; returns the decoded body. Raises KubeError unless 2xx or in `ok`."""
        qs = "?" + urllib.parse.urlencode(query) if query else ""
        headers = dict(self.headers)
        raw = None
        if body is not None:
            raw = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        conn = self._conn(timeout)
        try:
            conn.request(method, self.prefix + path + qs, body=raw, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode()
        finally:
            conn.close()
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = text
        if not 200 <= resp.status < 300 and resp.status not in ok:
            raise KubeError(resp.status, data)
        return data

    def get(self, path: str, **query: str) -> Obj | None:
        try:
            data: Obj = self.request("GET", path, query=query or None)
        except KubeError as e:
            if e.status == 404:
                return None
            raise
        return data

    def create(self, path: str, obj: Obj) -> Obj:
        result: Obj = self.request("POST", path, obj)
        return result

    def merge_patch(self, path: str, patch: Obj) -> Obj:
        result: Obj = self.request("PATCH", path, patch, content_type="application/merge-patch+json")
        return result

    def delete(self, path: str, **query: str) -> Any:
        return self.request("DELETE", path, query=query or None, ok=(404,))

    def apply_yaml(self, text: str, namespace: str) -> list[Obj]:
        """Create every document (chaos kinds) in `namespace`."""
        out = []
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            doc.setdefault("metadata", {})["namespace"] = namespace
            out.append(self.create(path_for(doc["apiVersion"], doc["kind"], namespace), doc))
        return out

    def wait_for(self, check: Callable[[], Any], *, timeout: float = 15, interval: float = 0.1, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        value = check()
        while not value and time.monotonic() < deadline:
            time.sleep(interval)
            value = check()
        assert value, f"timed out after {timeout}s waiting for {what or check}: last {value!r}"
        return value


def plural_of(kind: str) -> str:
    lower = kind.lower()
    return lower if lower.endswith("chaos") else lower + "s"


def path_for(api_version: str, kind: str, namespace: str, name: str = "") -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{ns}/{plural_of(kind)}" + (f"/{name}" if name else "")
