"""Who may see and do what: tokens compared in constant time, sessions, CSRF tokens. Pure.

A person logs in with a token (the viewer's or the admin's); the dashboard then gives them a
session cookie that holds the session itself, sealed (AES-GCM, so it can be neither read nor
forged nor altered) with a key derived from the dashboard's session secret: the role, when it was
opened, a random id and, in cluster mode, the person's Kubernetes token (which writes use and the
API server authorizes). Any replica holding the same secret accepts it, and it survives a restart;
it expires after `SESSION_TTL_S`. Rotating the secret ends every session at once. Each session's
CSRF token, which every form and request that changes something must carry, is derived from its
id with the same key, so every replica computes the same one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chaosbus.common.webtokens import ADMIN, VIEWER

SESSION_COOKIE = "chaosbus_session"
SESSION_TTL_S = 12 * 3600.0
MAX_COOKIE = 4000  # browsers keep cookies up to 4096 bytes: a longer Kubernetes token does not fit
MAX_CLOSED = 10_000  # sessions logged out here, remembered until they expire
_AAD = b"chaosbus.dashboard.session.v1"


class SessionTooLarge(ValueError):
    """The session (in practice its Kubernetes token) does not fit in a cookie."""


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def role_of(presented: str, tokens: dict[str, str]) -> str | None:
    """The role whose token `presented` is, or None. Every token is compared (in constant time, on
    digests so that lengths leak nothing), whichever matches.
    """
    got = _digest(presented.strip())
    found = None
    for role in (ADMIN, VIEWER):
        expected = tokens.get(role)
        if expected and hmac.compare_digest(got, _digest(expected)) and found is None:
            found = role
    return found


@dataclass
class Session:
    role: str
    csrf: str
    created: float
    kube_token: str = ""  # cluster mode: the person's own token for the Kubernetes API
    sid: str = ""

    @property
    def admin(self) -> bool:
        return self.role == ADMIN


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Sessions:
    """Sessions sealed into their cookies with a key derived from `secret` (shared by replicas)."""

    secret: bytes = field(default_factory=lambda: os.urandom(32))  # a lone process: its own
    ttl_s: float = SESSION_TTL_S
    closed: dict[str, float] = field(default_factory=dict)  # id -> expiry, logged out on this replica

    def __post_init__(self) -> None:
        self._seal = AESGCM(hashlib.sha256(b"seal\x00" + self.secret).digest())
        self._csrf_key = hashlib.sha256(b"csrf\x00" + self.secret).digest()

    def _csrf(self, sid: str) -> str:
        return _b64(hmac.new(self._csrf_key, sid.encode(), hashlib.sha256).digest()[:24])

    def open(self, role: str, *, kube_token: str = "", now: float | None = None) -> str:
        """A new session's cookie value."""
        now = time.time() if now is None else now
        sid = _b64(os.urandom(18))
        body = json.dumps({"r": role, "c": now, "i": sid, "k": kube_token}, separators=(",", ":")).encode()
        nonce = os.urandom(12)
        cookie = _b64(nonce + self._seal.encrypt(nonce, body, _AAD))
        if len(cookie) > MAX_COOKIE:
            raise SessionTooLarge(f"the session would be a {len(cookie)}-byte cookie (at most {MAX_COOKIE})")
        return cookie

    def get(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie holds, if this secret sealed it and it has not expired or been closed."""
        if not cookie or len(cookie) > MAX_COOKIE:
            return None
        now = time.time() if now is None else now
        try:
            raw = _unb64(cookie)
            body = json.loads(self._seal.decrypt(raw[:12], raw[12:], _AAD))
            role, created, sid, kube = str(body["r"]), float(body["c"]), str(body["i"]), str(body["k"])
        except (ValueError, InvalidTag, KeyError, TypeError):
            return None
        if role not in (ADMIN, VIEWER) or not 0 <= now - created <= self.ttl_s or sid in self.closed:
            return None
        return Session(role=role, csrf=self._csrf(sid), created=created, kube_token=kube, sid=sid)

    def close(self, cookie: str | None, now: float | None = None) -> None:
        """Log out: this replica refuses the cookie from now on (the browser deletes it anyway)."""
        now = time.time() if now is None else now
        s = self.get(cookie, now)
        if s is None:
            return
        for sid in [k for k, exp in self.closed.items() if exp <= now]:
            del self.closed[sid]
        if len(self.closed) < MAX_CLOSED:
            self.closed[s.sid] = s.created + self.ttl_s


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(_digest(presented or ""), _digest(session.csrf))


def same_origin(origin: str | None, host: str | None, scheme: str) -> bool:
    """A browser's Origin on a write must be this server's (absent: not a browser's cross-site form)."""
    if not origin:
        return True
    return bool(host) and origin == f"{scheme}://{host}"
