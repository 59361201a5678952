"""Settings shared by every command and service: where NATS is, the node name, state paths."""

from __future__ import annotations

import os
import socket
from pathlib import Path

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def state_dir() -> Path:
    """Where `chaosbus up` leaves the URL of the server it started (CHAOSBUS_STATE_DIR overrides)."""
    env = os.environ.get("CHAOSBUS_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/chaosbus")
    return Path.home() / ".local" / "state" / "chaosbus"


def url_file() -> Path:
    return state_dir() / "nats.url"


def nats_url(explicit: str | None = None) -> str:
    """--nats, else CHAOSBUS_NATS_URL, else the running embedded server's URL, else the default."""
    if explicit:
        return explicit
    env = os.environ.get("CHAOSBUS_NATS_URL")
    if env:
        return env
    try:
        text = url_file().read_text().strip()
    except OSError:
        text = ""
    return text or DEFAULT_NATS_URL


def node_name(explicit: str | None = None) -> str:
    """This machine's node name: --node, CHAOSBUS_NODE, or the hostname (as a DaemonSet pod sees it)."""
    return explicit or os.environ.get("CHAOSBUS_NODE") or socket.gethostname()


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default
