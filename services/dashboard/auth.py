"""Who may see and do what: tokens compared in constant time, sessions, CSRF tokens. Pure.

A person logs in with a token (the viewer's or the admin's); the dashboard then keeps a session
in memory, named by a random cookie, holding the role (and in cluster mode the person's Kubernetes
token, which writes use and the API server authorizes). Each session has a CSRF token every form
and request that changes something must carry.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

from chaosbus.common.webtokens import ADMIN, VIEWER

SESSION_COOKIE = "chaosbus_session"
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 1000


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

    @property
    def admin(self) -> bool:
        return self.role == ADMIN


@dataclass
class Sessions:
    """Live sessions by cookie value; expired ones are dropped on the way."""

    ttl_s: float = SESSION_TTL_S
    by_id: dict[str, Session] = field(default_factory=dict)

    def open(self, role: str, *, kube_token: str = "", now: float | None = None) -> str:
        now = time.time() if now is None else now
        self._expire(now)
        while len(self.by_id) >= MAX_SESSIONS:
            self.by_id.pop(next(iter(self.by_id)))
        sid = secrets.token_urlsafe(32)
        self.by_id[sid] = Session(role=role, csrf=secrets.token_urlsafe(24), created=now, kube_token=kube_token)
        return sid

    def get(self, sid: str | None, now: float | None = None) -> Session | None:
        if not sid:
            return None
        now = time.time() if now is None else now
        s = self.by_id.get(sid)
        if s is None or now - s.created > self.ttl_s:
            self.by_id.pop(sid, None)
            return None
        return s

    def close(self, sid: str | None) -> None:
        if sid:
            self.by_id.pop(sid, None)

    def _expire(self, now: float) -> None:
        for sid in [k for k, s in self.by_id.items() if now - s.created > self.ttl_s]:
            del self.by_id[sid]


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(_digest(presented or ""), _digest(session.csrf))


def same_origin(origin: str | None, host: str | None, scheme: str) -> bool:
    """A browser's Origin on a write must be this server's (absent: not a browser's cross-site form)."""
    if not origin:
        return True
    return bool(host) and origin == f"{scheme}://{host}"
