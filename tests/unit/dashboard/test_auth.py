"""Tokens, sessions and CSRF: the dashboard's access checks."""

from __future__ import annotations

import stat
from pathlib import Path

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
    s.close(sid2)
    assert s.get(sid2, now=200.0) is None
    assert s.get(None) is None and s.get("made-up") is None


def test_csrf_token_is_per_session_and_required() -> None:
    s = auth.Sessions()
    a, b = s.get(s.open("admin")), s.get(s.open("admin"))
    assert a is not None and b is not None
    assert auth.csrf_ok(a, a.csrf)
    assert not auth.csrf_ok(a, b.csrf) and not auth.csrf_ok(a, "") and not auth.csrf_ok(a, None)


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
    webtokens.ensure_tokens(d)
    assert webtokens.read_tokens(d) == first
