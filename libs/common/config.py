"""Settings shared by every command and service: where NATS is, the node name, state paths."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from chaosbus.common import settings

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def state_dir() -> Path:
    """Where `chaosbus up` leaves the URL of the server it started (CHAOSBUS_STATE_DIR overrides)."""
    env = settings.current().state_dir
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
    env = settings.current().nats_url
    if env:
        return env
    try:
        text = url_file().read_text().strip()
    except OSError:
        text = ""
    return text or DEFAULT_NATS_URL


def node_name(explicit: str | None = None) -> str:
    """This machine's node name: --node, CHAOSBUS_NODE, or the hostname (as a DaemonSet pod sees it)."""
    return explicit or settings.current().node or socket.gethostname()


def _settings(env: Mapping[str, str] | None) -> settings.Settings:
    """The process's settings, or those a given environment would make (for tests and manifests)."""
    return settings.current() if env is None else settings.from_env(env)


@dataclass(frozen=True)
class ControllerScope:
    """Chaos Mesh's controller settings CLUSTER_SCOPED, TARGET_NAMESPACE, ENABLE_FILTER_NAMESPACE.

    The watcher and the scheduler read the same ones, so a deployment sets them once for both.
    """

    cluster_scoped: bool = True
    target_namespace: str = ""
    enable_filter_namespace: bool = False


def controller_scope(
    *, target_namespace: str = "", enable_filter_namespace: bool = False, env: Mapping[str, str] | None = None
) -> ControllerScope:
    """The scope from flags (which win) or Chaos Mesh's environment variable names.

    `--target-namespace` alone implies namespace-scoped mode. Booleans are parsed as Chaos Mesh's
    envconfig parses them (Go's strconv.ParseBool).

    Raises:
        ValueError: A boolean that does not parse, or CLUSTER_SCOPED=false without a target
            namespace (Chaos Mesh's controller refuses to start then too); the message names the variable.
    """
    given = _settings(env)
    cluster_scoped = given.cluster_scoped and not target_namespace
    target = target_namespace or given.target_namespace.strip()
    enable_filter = enable_filter_namespace or given.enable_filter_namespace
    if not cluster_scoped and not target:
        raise ValueError("CLUSTER_SCOPED=false needs TARGET_NAMESPACE (or --target-namespace)")
    return ControllerScope(cluster_scoped, target, enable_filter)


DEFAULT_OWN_NAMESPACE = "chaosbus"
ALWAYS_PROTECTED = ("kube-system",)


@dataclass(frozen=True)
class TargetGuard:
    """What chaosbus never targets, whoever asks: pods of protected namespaces (its own, where the
    kill switch and the injectors run, and kube-system), and host-network pods for network faults
    (the fault would land in the node's own network namespace) unless ALLOW_HOST_NETWORK_TESTING.

    The scheduler, the node injectors and the cluster injector read the same settings, so each
    refuses on its own what another might have been talked into.
    """

    protected_namespaces: frozenset[str] = frozenset({DEFAULT_OWN_NAMESPACE, *ALWAYS_PROTECTED})
    allow_host_network_testing: bool = False

    def protected(self, namespace: str) -> bool:
        return namespace in self.protected_namespaces

    def pod_refusal(self, namespace: str, host_network: bool, *, network: bool) -> str:
        """Why a pod is never a target ("" when it may be); `network`: for a network fault."""
        if self.protected(namespace):
            return f"in protected namespace {namespace} (PROTECTED_NAMESPACES)"
        if network and host_network and not self.allow_host_network_testing:
            return (
                "on the host network: a network fault would hit its node's own network "
                "(ALLOW_HOST_NETWORK_TESTING is off)"
            )
        return ""


def own_namespace(env: Mapping[str, str] | None = None) -> str:
    """chaosbus's own namespace: CHAOSBUS_NAMESPACE, else POD_NAMESPACE (the downward API's
    metadata.namespace in the deploy base), else `chaosbus`."""
    given = _settings(env)
    return (given.own_namespace or given.pod_namespace or DEFAULT_OWN_NAMESPACE).strip()


def target_guard(
    *,
    protected_namespaces: str | None = None,
    allow_host_network_testing: bool = False,
    env: Mapping[str, str] | None = None,
) -> TargetGuard:
    """The guard from flags (which win) or the environment.

    PROTECTED_NAMESPACES (or `--protected-namespaces`) is a comma-separated list that replaces
    kube-system as the default; chaosbus's own namespace is always protected, since experiments
    there could kill the components that recover every fault. ALLOW_HOST_NETWORK_TESTING is Chaos
    Mesh's controller setting of the same name.

    Raises:
        ValueError: a boolean that does not parse, or a list entry that is not a namespace name.
    """
    given = _settings(env)
    raw = (
        protected_namespaces
        if protected_namespaces is not None
        else (given.protected_namespaces if given.is_set("PROTECTED_NAMESPACES") else None)
    )
    listed = list(ALWAYS_PROTECTED) if raw is None else [n.strip() for n in raw.split(",") if n.strip()]
    for name in listed:
        if not _NAMESPACE.fullmatch(name):
            raise ValueError(f"PROTECTED_NAMESPACES: {name!r} is not a namespace name")
    allow = allow_host_network_testing or given.allow_host_network_testing
    return TargetGuard(frozenset({own_namespace(env), *listed}), allow)


_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
