"""Tokens, sessions and CSRF: the dashboard's access checks."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from chaosbus.common import webtokens
from chaosbus.dashboard import auth

TOKENS = {"viewer": "v" * 43, "admin": "a" * 43}


def test_each_token_gives_its_own_role_and_nothing_else_gets_in() -> None:
    assert auth.role_of("v" * 43, TOKENS) == "viewer"
    assert auth.role_of(" " + "a" * 43 + "\n", TOKENS) == "admin"  # pasted with whitespace
    for wrong in ("", "v" * 42, "a" * 44, "A" * 43, "viewer", "admin"):
        assert auth.role_of(wrong, TOKENS) is None


def test_a_missing_token_file_never_matches_the_empty_string() -> None:
    assert auth.role_of("", {"viewer": ""}) is None
    assert auth.role_of("x", {"admin": "x"}) == "admin"


def test_sessions_expire_and_close() -> None:
    s = auth.Sessions(ttl_s=10)
    sid = s.open("admin", now=100.0)
    assert s.get(sid, now=105.0) is not None and s.get(sid, now=105.0).admin  # type: ignore[union-attr]
    assert s.get(sid, now=111.0) is None
    sid2 = s.open("viewer", now=200.0)
    s.close(sid2, now=200.0)
    assert s.get(sid2, now=200.0) is None
    assert s.get(None) is None and s.get("made-up") is None


def test_csrf_token_is_per_session_and_required() -> None:
    s = auth.Sessions()
    a, b = s.get(s.open("admin")), s.get(s.open("admin"))
    assert a is not None and b is not None
    assert auth.csrf_ok(a, a.csrf)
    assert not auth.csrf_ok(a, b.csrf) and not auth.csrf_ok(a, "") and not auth.csrf_ok(a, None)


def test_a_session_is_accepted_by_every_replica_with_the_secret_and_by_no_other() -> None:
    here, replica, restarted = auth.Sessions(b"s" * 32), auth.Sessions(b"s" * 32), auth.Sessions(b"s" * 32)
    cookie = here.open("admin", kube_token="k8s-token-xyz")
    a, b = here.get(cookie), replica.get(cookie)
    assert a is not None and b is not None and b.admin and b.kube_token == "k8s-token-xyz"
    assert a.csrf == b.csrf and auth.csrf_ok(b, a.csrf)  # a form from one replica posts to another
    assert restarted.get(cookie) is not None
    assert auth.Sessions(b"t" * 32).get(cookie) is None  # the secret rotated: everyone is logged out
    assert "k8s-token" not in cookie and b"k8s-token" not in auth._unb64(cookie)  # sealed, not just signed


def test_a_tampered_or_forged_cookie_is_refused() -> None:
    s = auth.Sessions(b"s" * 32)
    cookie = s.open("viewer")
    raw = bytearray(auth._unb64(cookie))
    raw[-1] ^= 1
    assert s.get(auth._b64(bytes(raw))) is None
    assert s.get(cookie[:-2]) is None and s.get("x" * 5000) is None and s.get("!!!") is None


def test_a_kubernetes_token_too_long_for_a_cookie_is_refused_at_login() -> None:
    with pytest.raises(auth.SessionTooLarge):
        auth.Sessions().open("admin", kube_token="t" * 3500)


def test_origin_must_be_this_server_when_a_browser_sends_one() -> None:
    assert auth.same_origin(None, "127.0.0.1:2333", "http")
    assert auth.same_origin("http://127.0.0.1:2333", "127.0.0.1:2333", "http")
    assert not auth.same_origin("http://evil.example", "127.0.0.1:2333", "http")
    assert not auth.same_origin("https://127.0.0.1:2333", "127.0.0.1:2333", "http")


def test_token_files_are_private_random_and_kept(tmp_path: Path) -> None:
    d = tmp_path / "dashboard"
    files = webtokens.ensure_tokens(d)
    first = webtokens.read_tokens(d)
    assert set(first) == {"viewer", "admin"} and first["viewer"] != first["admin"]
    assert all(len(t) >= 40 for t in first.values())
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files.values())
    secret = webtokens.read_session_secret(d)
    assert secret and len(secret) >= 40
    assert stat.S_IMODE(webtokens.session_secret_file(d).stat().st_mode) == 0o600
    webtokens.ensure_tokens(d)
    assert webtokens.read_tokens(d) == first and webtokens.read_session_secret(d) == secret
