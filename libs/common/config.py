"""Settings shared by every command and service: where NATS is, the node name, state paths."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ControllerScope:
    """Chaos Mesh's controller settings CLUSTER_SCOPED, TARGET_NAMESPACE, ENABLE_FILTER_NAMESPACE.

    The watcher and the scheduler read the same ones, so a deployment sets them once for both.
    """

    cluster_scoped: bool = True
    target_namespace: str = ""
    enable_filter_namespace: bool = False


def controller_scope(*, target_namespace: str = "", enable_filter_namespace: bool = False,
                     env: Mapping[str, str] | None = None) -> ControllerScope:
    """The scope from flags (which win) or Chaos Mesh's environment variable names.

    `--target-namespace` alone implies namespace-scoped mode. Booleans are parsed as Chaos Mesh's
    envconfig parses them (Go's strconv.ParseBool).

    Raises:
        ValueError: A boolean that does not parse, or CLUSTER_SCOPED=false without a target
            namespace (Chaos Mesh's controller refuses to start then too); the message names the variable.
    """
    env = os.environ if env is None else env
    cluster_scoped = _env_bool(env, "CLUSTER_SCOPED", True) and not target_namespace
    target = target_namespace or env.get("TARGET_NAMESPACE", "").strip()
    enable_filter = enable_filter_namespace or _env_bool(env, "ENABLE_FILTER_NAMESPACE", False)
    if not cluster_scoped and not target:
        raise ValueError("CLUSTER_SCOPED=false needs TARGET_NAMESPACE (or --target-namespace)")
    return ControllerScope(cluster_scoped, target, enable_filter)


_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw not in _TRUE + _FALSE:
        raise ValueError(f"{name}: {raw!r} is not a boolean (expected true or false)")
    return raw in _TRUE
