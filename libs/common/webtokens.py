"""The dashboard's access tokens: one that lets a person look, one that also lets them act.

Local mode keeps them as two files in `<state dir>/dashboard/` (0600, made by `chaosbus up` at first
start and reused); cluster mode mounts them from the `chaosbus-dashboard-tokens` Secret. A token is
32 random bytes, URL-safe base64. Beside them, `session.key` is the secret that seals session
cookies, so that every replica (and a restarted dashboard) accepts them; replacing it logs
everyone out.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from chaosbus.common import config, natsauth

VIEWER = "viewer"
ADMIN = "admin"
ROLES = (VIEWER, ADMIN)
SESSION_SECRET = "session"  # its key in the Secret; `session.key` in the tokens directory


def tokens_dir(state: Path | None = None) -> Path:
    return (state or config.state_dir()) / "dashboard"


def token_file(role: str, directory: Path) -> Path:
    return directory / f"{role}.token"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def session_secret_file(directory: Path) -> Path:
    return directory / f"{SESSION_SECRET}.key"


def ensure_tokens(directory: Path) -> dict[str, Path]:
    """Each role's token file and the session secret, created (0600) where missing; existing ones are kept."""
    out = {}
    for role in ROLES:
        path = token_file(role, directory)
        if not path.exists():
            natsauth.write_private(path, new_token() + "\n")
        out[role] = path
    secret = session_secret_file(directory)
    if not secret.exists():
        natsauth.write_private(secret, new_token() + "\n")
    return out


def read_session_secret(directory: Path) -> bytes | None:
    """The session secret (None: missing or empty, and sessions are then this process's own)."""
    try:
        value = session_secret_file(directory).read_text().strip()
    except OSError:
        return None
    return value.encode() if value else None


def read_tokens(directory: Path) -> dict[str, str]:
    """The tokens found in `directory` (a role whose file is missing or empty is left out)."""
    found = {}
    for role in ROLES:
        try:
            value = token_file(role, directory).read_text().strip()
        except OSError:
            continue
        if value:
            found[role] = value
    return found
