"""Every setting chaosbus reads from its environment, in one table, parsed once into one typed
object. A service reads `current()` at start (the first call parses `os.environ`; a bad value
stops it with the variable named); nothing reads the environment at import time. Flags, where a
service has one, win over the variable. docs/configuration.md is generated from `SETTINGS`
(`python -m chaosbus.common.settings`), and a contract test keeps the two equal and finds any read
of these variables elsewhere.

Not settings: the marks chaosbus puts in the environment of processes it starts (a fault's helper's
`CHAOSBUS_FAULT_NODE`/`CHAOSBUS_FAULT_KEY`, a process pod's `CHAOSBUS_POD_UID`/
`CHAOSBUS_POD_NAMESPACE`), which the injector reads back from /proc/<pid>/environ.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Parse = Literal["str", "int", "float", "bool"]

# Booleans parse as Chaos Mesh's envconfig parses them (Go's strconv.ParseBool).
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


@dataclass(frozen=True)
class Setting:
    env: str  # the variable
    field: str  # its attribute on Settings
    parse: Parse
    default: str  # as it would be written in the environment ("" = unset)
    readers: str  # who reads it
    help: str  # what it does, for docs/configuration.md


SETTINGS: tuple[Setting, ...] = (
    # Every component
    Setting(
        "CHAOSBUS_NATS_URL",
        "nats_url",
        "str",
        "",
        "all",
        "NATS URL (`--nats` wins); unset: the URL `chaosbus up` left in the state dir, else nats://127.0.0.1:4222",
    ),
    Setting(
        "CHAOSBUS_NATS_CREDS",
        "nats_creds",
        "str",
        "",
        "all",
        "this identity's nkey seed file "
        "(`--nats-creds`); unset: its seed in the state dir when the server is the one `chaosbus up` runs",
    ),
    Setting(
        "CHAOSBUS_NATS_TLS_DIR",
        "nats_tls_dir",
        "str",
        "",
        "all",
        "folder with ca.crt, tls.crt and tls.key for mutual TLS to NATS (`--nats-tls`; cluster mode)",
    ),
    Setting(
        "CHAOSBUS_NATS_TOKEN_FILE",
        "nats_token_file",
        "str",
        "",
        "injector",
        "cluster mode's node "
        "injector: its pod's projected ServiceAccount token (audience chaosbus-nats), which the auth "
        "service turns into this node's NATS user; read again at every reconnect",
    ),
    Setting(
        "CHAOSBUS_AUTH_ISSUER_SEED_FILE",
        "auth_issuer_seed_file",
        "str",
        "",
        "auth",
        "the auth callout issuer's account nkey seed, which signs the users it issues (`--issuer-seed`)",
    ),
    Setting(
        "CHAOSBUS_STATE_DIR",
        "state_dir",
        "str",
        "",
        "all",
        "local mode's state (NATS URL, "
        "credentials, keys, pods); unset: /run/chaosbus as root, else ~/.local/state/chaosbus",
    ),
    Setting(
        "CHAOSBUS_KEYS_DIR",
        "keys_dir",
        "str",
        "",
        "scheduler, injector, cli",
        "the signing keys (scheduler.key, operator.key and their .pub); unset: `keys` in the state dir",
    ),
    Setting(
        "CHAOSBUS_UNSIGNED",
        "unsigned",
        "bool",
        "false",
        "scheduler, injector",
        "send and accept unsigned commands: only to measure what signing costs (`make bench`)",
    ),
    Setting("CHAOSBUS_MODE", "mode", "str", "", "injector, dashboard", "`local` or `cluster` (`--mode`); unset: local"),
    Setting(
        "CHAOSBUS_NAMESPACE",
        "own_namespace",
        "str",
        "",
        "scheduler, injector",
        "chaosbus's own namespace, never targeted; unset: POD_NAMESPACE, else `chaosbus`",
    ),
    Setting(
        "POD_NAMESPACE",
        "pod_namespace",
        "str",
        "",
        "scheduler, injector, auth",
        "the pod's namespace (the downward API in deploy/k8s)",
    ),
    Setting(
        "KUBECONFIG",
        "kubeconfig",
        "str",
        "",
        "watcher, recorder, cluster injector",
        "kubeconfig file (`--kubeconfig` wins); unset: the in-cluster service account",
    ),
    Setting(
        "CHAOSBUS_KUBE_UNANSWERED_S",
        "kube_unanswered_s",
        "float",
        "20",
        "watcher, cluster injector, recorder (cluster mode), auth",
        "seconds the Kubernetes API may go unanswered before /readyz says 503 (GET /version every half of it)",
    ),
    # Chaos Mesh's controller settings, same names and meaning
    Setting(
        "CLUSTER_SCOPED",
        "cluster_scoped",
        "bool",
        "true",
        "watcher, scheduler",
        "watch every namespace; false needs TARGET_NAMESPACE (Chaos Mesh's setting)",
    ),
    Setting(
        "TARGET_NAMESPACE",
        "target_namespace",
        "str",
        "",
        "watcher, scheduler",
        "the one namespace watched when not cluster scoped (`--target-namespace`)",
    ),
    Setting(
        "ENABLE_FILTER_NAMESPACE",
        "enable_filter_namespace",
        "bool",
        "false",
        "watcher, scheduler",
        "only namespaces annotated `chaos-mesh.org/inject=enabled` may be targeted",
    ),
    Setting(
        "PROTECTED_NAMESPACES",
        "protected_namespaces",
        "str",
        "",
        "scheduler, injector",
        "comma-"
        "separated namespaces never targeted (`--protected-namespaces`); unset: kube-system; "
        "chaosbus's own is always protected",
    ),
    Setting(
        "ALLOW_HOST_NETWORK_TESTING",
        "allow_host_network_testing",
        "bool",
        "false",
        "scheduler, injector",
        "let network faults select hostNetwork pods (Chaos Mesh's setting)",
    ),
    Setting(
        "POD_FAILURE_PAUSE_IMAGE",
        "pod_failure_pause_image",
        "str",
        "",
        "cluster injector",
        "the image pod-failure swaps in (Chaos Mesh's setting); unset: gcr.io/google-containers/pause:latest",
    ),
    # Scheduler
    Setting(
        "CHAOSBUS_CLUSTER_INJECTOR",
        "cluster_injector",
        "bool",
        "false",
        "scheduler",
        "send API-level faults (pod-kill, pod-failure, Task Pods) to the cluster injector (`--cluster-injector`)",
    ),
    Setting(
        "CHAOSBUS_SCHEDULER_ID",
        "scheduler_id",
        "str",
        "",
        "scheduler",
        "this instance's name in the leader election (`--instance`); unset: the hostname",
    ),
    Setting(
        "CHAOSBUS_MAX_TARGETS",
        "max_targets",
        "int",
        "5000",
        "scheduler",
        "most targets one experiment may select (`--max-targets`)",
    ),
    Setting(
        "CHAOSBUS_COMMAND_TTL",
        "command_ttl",
        "float",
        "300",
        "scheduler",
        "seconds a signed node command stays valid (`--command-ttl`)",
    ),
    Setting(
        "CHAOSBUS_LEASE_SECONDS",
        "lease_seconds",
        "float",
        "15",
        "scheduler, injector",
        "how long a node keeps a fault without a lease renewal (`--lease-seconds` on the injector)",
    ),
    Setting(
        "CHAOSBUS_LEADER_SECONDS",
        "leader_seconds",
        "float",
        "10",
        "scheduler",
        "the leader lease's ttl (`--leader-ttl`)",
    ),
    # Recorder
    Setting(
        "CHAOSBUS_MAX_EVENTS",
        "max_events",
        "int",
        "10",
        "recorder",
        "record events kept per target in status (Chaos Mesh keeps 10)",
    ),
    Setting(
        "POD_NAME",
        "pod_name",
        "str",
        "",
        "recorder",
        "the pod's name, as the Event source instance (the downward API); unset: the hostname",
    ),
    # Injector
    Setting(
        "CHAOSBUS_NODE",
        "node",
        "str",
        "",
        "injector, cli",
        "this node's name (`--node`); unset: the hostname, as a DaemonSet pod sees it",
    ),
    Setting(
        "CHAOSBUS_JOURNAL",
        "journal",
        "str",
        "",
        "injector",
        "the node journal's SQLite file (`--journal`); unset: /var/lib/chaosbus/injector-<node>.db as root",
    ),
    Setting(
        "CHAOSBUS_MAX_LEASE_SECONDS",
        "max_lease_seconds",
        "float",
        "300",
        "injector",
        "the longest lease ttl a node accepts (`--max-lease-seconds`)",
    ),
    Setting(
        "CHAOSBUS_TASK_NAMESPACES",
        "task_namespaces",
        "str",
        "",
        "cluster injector",
        "comma-separated namespaces a Workflow Task Pod may run in (`--task-namespaces`); unset: any not protected",
    ),
    Setting(
        "CHAOSBUS_CONTAINERD_SOCKET",
        "containerd_socket",
        "str",
        "/run/containerd/containerd.sock",
        "injector",
        "containerd's CRI socket (`--containerd-socket`)",
    ),
    Setting(
        "CHAOSBUS_CRIO_SOCKET",
        "crio_socket",
        "str",
        "/var/run/crio/crio.sock",
        "injector",
        "CRI-O's socket (`--crio-socket`)",
    ),
    Setting(
        "CHAOSBUS_DOCKER_SOCKET",
        "docker_socket",
        "str",
        "/var/run/docker.sock",
        "injector",
        "Docker's socket (`--docker-socket`)",
    ),
    Setting(
        "CHAOSBUS_RUNTIME_TIMEOUT",
        "runtime_timeout",
        "float",
        "",
        "injector",
        "seconds a container runtime call may take (`--runtime-timeout`); unset: 2",
    ),
    Setting(
        "CHAOSBUS_NATIVE_DIR",
        "native_dir",
        "str",
        "",
        "injector",
        "where the native helpers were built; unset: the checkout's native/build",
    ),
    Setting(
        "CHAOSBUS_IOCHAOS_DIR",
        "iochaos_dir",
        "str",
        "",
        "injector",
        "IOChaos rules and FUSE server records; unset: `iochaos` in the state dir",
    ),
    Setting(
        "CHAOSBUS_NFT",
        "nft",
        "str",
        "",
        "injector",
        "`spawn`: run the nft binary instead of libnftables (a fallback and a benchmark floor)",
    ),
    Setting(
        "CHAOSBUS_EXEMPT",
        "exempt",
        "str",
        "",
        "injector",
        "comma-separated host:port endpoints a partition never cuts, besides NATS itself",
    ),
    Setting(
        "CHAOSBUS_RECOVER_CHUNK",
        "recover_chunk",
        "int",
        "64",
        "injector",
        "targets recovered per batch when a node recovers everything (halt, lease loss)",
    ),
    Setting(
        "CHAOSBUS_EFFECT_CHUNK",
        "effect_chunk",
        "int",
        "25",
        "injector",
        "targets per result batch while a large command is applied",
    ),
    # Dashboard
    Setting(
        "CHAOSBUS_DASHBOARD_LISTEN",
        "dashboard_listen",
        "str",
        "127.0.0.1",
        "dashboard",
        "address the dashboard listens on (`--listen`)",
    ),
    Setting(
        "KUBERNETES_SERVICE_HOST",
        "kubernetes_service_host",
        "str",
        "",
        "dashboard",
        "the API server, set by Kubernetes in every pod",
    ),
    Setting(
        "KUBERNETES_SERVICE_PORT", "kubernetes_service_port", "str", "443", "dashboard", "its port, set by Kubernetes"
    ),
)


class InvalidSetting(ValueError):
    """A variable whose value does not parse; the message names it."""


@dataclass(frozen=True)
class Settings:
    nats_url: str = ""
    nats_creds: str = ""
    nats_tls_dir: str = ""
    nats_token_file: str = ""
    auth_issuer_seed_file: str = ""
    state_dir: str = ""
    keys_dir: str = ""
    unsigned: bool = False
    mode: str = ""
    own_namespace: str = ""
    pod_namespace: str = ""
    kubeconfig: str = ""
    kube_unanswered_s: float = 20.0
    cluster_scoped: bool = True
    target_namespace: str = ""
    enable_filter_namespace: bool = False
    protected_namespaces: str = ""
    allow_host_network_testing: bool = False
    pod_failure_pause_image: str = ""
    cluster_injector: bool = False
    scheduler_id: str = ""
    max_targets: int = 5000
    command_ttl: float = 300.0
    lease_seconds: float = 15.0
    leader_seconds: float = 10.0
    max_events: int = 10
    pod_name: str = ""
    node: str = ""
    journal: str = ""
    max_lease_seconds: float = 300.0
    task_namespaces: str = ""
    containerd_socket: str = "/run/containerd/containerd.sock"
    crio_socket: str = "/var/run/crio/crio.sock"
    docker_socket: str = "/var/run/docker.sock"
    runtime_timeout: float = 0.0
    native_dir: str = ""
    iochaos_dir: str = ""
    nft: str = ""
    exempt: str = ""
    recover_chunk: int = 64
    effect_chunk: int = 25
    dashboard_listen: str = "127.0.0.1"
    kubernetes_service_host: str = ""
    kubernetes_service_port: str = "443"
    # Which variables the environment set (even to ""), for settings whose absence means something.
    given: frozenset[str] = frozenset()

    def is_set(self, env: str) -> bool:
        return env in self.given


def _parse(s: Setting, raw: str) -> str | int | float | bool:
    text = raw.strip()
    if s.parse == "str":
        return raw
    if s.parse == "bool":
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise InvalidSetting(f"{s.env}: {raw!r} is not a boolean (expected true or false)")
    try:
        return int(text) if s.parse == "int" else float(text)
    except ValueError:
        raise InvalidSetting(f"{s.env}: {raw!r} is not {'an integer' if s.parse == 'int' else 'a number'}") from None


def from_env(env: Mapping[str, str]) -> Settings:
    """The settings an environment gives; unset or empty variables keep their defaults.

    Raises:
        InvalidSetting: a value that does not parse, naming the variable.
    """
    values: dict[str, object] = {}
    for s in SETTINGS:
        raw = env.get(s.env)
        if raw is not None and raw.strip():
            values[s.field] = _parse(s, raw)
    return Settings(**values, given=frozenset(s.env for s in SETTINGS if s.env in env))  # type: ignore[arg-type]


_current: Settings | None = None


def current() -> Settings:
    """This process's settings, parsed from its environment the first time they are asked for."""
    global _current
    if _current is None:
        _current = from_env(os.environ)
    return _current


def reset() -> None:
    """Forget the parsed settings (tests that change the environment of their own process)."""
    global _current
    _current = None


def markdown() -> str:
    """docs/configuration.md's table."""
    lines = ["| variable | default | read by | what it does |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(unset)"
        lines.append(f"| `{s.env}` | {default} | {s.readers} | {s.help} |")
    return "\n".join(lines) + "\n"


def _check_table() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)} - {"given"}
    named = [s.field for s in SETTINGS]
    assert sorted(named) == sorted(fields) and len(set(named)) == len(named), "SETTINGS and Settings disagree"


if __name__ == "__main__":
    _check_table()
    sys.stdout.write(markdown())
