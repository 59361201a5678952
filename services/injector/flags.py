"""The injector's command line, and what its flags and settings configure: the journal's path, the
container runtime sockets, the Task Pod policy.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from chaosbus.common import config, service, settings, subjects
from chaosbus.injector import authorize, podpolicy, runtime


def default_journal(node: str) -> Path:
    """CHAOSBUS_JOURNAL, else /var/lib/chaosbus/injector-<node>.db (root) or the user's state dir."""
    env = settings.current().journal
    if env:
        return Path(env)
    base = Path("/var/lib/chaosbus") if os.geteuid() == 0 else Path.home() / ".local" / "state" / "chaosbus"
    return base / f"injector-{subjects.token(node)}.db"


def runtime_config(args: argparse.Namespace) -> runtime.RuntimeConfig:
    """The container runtime sockets and deadline from the flags, else the environment."""
    return runtime.config_from_env(args.containerd_socket, args.crio_socket, args.docker_socket, args.runtime_timeout)


def task_policy(guard: config.TargetGuard, namespaces: str | None) -> podpolicy.TaskPodPolicy:
    given = settings.current()
    listed = (
        namespaces
        if namespaces is not None
        else (given.task_namespaces if given.is_set("CHAOSBUS_TASK_NAMESPACES") else None)
    )
    allowed = None if listed is None else frozenset(n.strip() for n in listed.split(",") if n.strip())
    return podpolicy.TaskPodPolicy(protected=guard.protected_namespaces, namespaces=allowed)


def add_arguments(p: argparse.ArgumentParser) -> None:
    env = settings.current()
    p.add_argument("--node", default=None, help="node name (default: CHAOSBUS_NODE or the hostname)")
    p.add_argument(
        "--mode",
        choices=authorize.MODES,
        default=env.mode or authorize.LOCAL,
        help="local: targets are process pods (process://) and Tasks run as processes; cluster: a "
        "node of a Kubernetes cluster, targets are runtime containers only and Tasks are refused "
        "(they run as Pods there). Default: CHAOSBUS_MODE or local",
    )
    p.add_argument(
        "--task-namespaces",
        default=None,
        help="with --cluster: comma-separated namespaces where Task Pods may be created (default: "
        "CHAOSBUS_TASK_NAMESPACES, else the Workflow's own namespace, never a protected one)",
    )
    service.add_guard_arguments(p)
    p.add_argument(
        "--cluster",
        action="store_true",
        help="the cluster injector: API-level faults (pod-kill, pod-failure) through the Kubernetes "
        f"API, as node {subjects.CLUSTER_NODE!r}",
    )
    p.add_argument("--kubeconfig", default=None, help="with --cluster: kubeconfig file (default: in-cluster)")
    p.add_argument(
        "--pause-image",
        default=None,
        help="with --cluster: pod-failure's image (default: POD_FAILURE_PAUSE_IMAGE or "
        "gcr.io/google-containers/pause:latest)",
    )
    p.add_argument(
        "--journal",
        default=None,
        help="journal file (default: CHAOSBUS_JOURNAL or /var/lib/chaosbus/injector-<node>.db)",
    )
    p.add_argument(
        "--journal-sync",
        choices=("full", "normal"),
        default="full",
        help="full: fsync every journal commit (survives power loss); normal: faster",
    )
    p.add_argument(
        "--lease-seconds",
        type=float,
        default=env.lease_seconds,
        help="dead-man lease until the scheduler's first renewal says otherwise",
    )
    p.add_argument(
        "--max-lease-seconds",
        type=float,
        default=env.max_lease_seconds,
        help="the longest lease ttl this node honours, whatever a lease says",
    )
    p.add_argument(
        "--keys-dir",
        default=None,
        help="directory of trusted public keys, scheduler*.pub, operator*.pub and guard*.pub (default: "
        "CHAOSBUS_KEYS_DIR or <state dir>/keys)",
    )
    p.add_argument("--sweep-interval", type=float, default=30.0, help="seconds between orphan sweeps")
    p.add_argument(
        "--drops-interval",
        type=float,
        default=2.0,
        help="seconds between kernel read-backs (partition_dropped_*, qdiscs_installed, stressors_running, "
        "skewed_processes)",
    )
    p.add_argument(
        "--containerd-socket",
        default=None,
        help="containerd:// targets: containerd's CRI socket (default: CHAOSBUS_CONTAINERD_SOCKET or "
        "/run/containerd/containerd.sock)",
    )
    p.add_argument(
        "--crio-socket",
        default=None,
        help="cri-o:// targets: CRI-O's socket (default: CHAOSBUS_CRIO_SOCKET or /var/run/crio/crio.sock)",
    )
    p.add_argument(
        "--docker-socket",
        default=None,
        help="docker:// targets: the Docker Engine socket (default: CHAOSBUS_DOCKER_SOCKET or /var/run/docker.sock)",
    )
    p.add_argument(
        "--runtime-timeout",
        type=float,
        default=None,
        help="seconds per container runtime call (default: CHAOSBUS_RUNTIME_TIMEOUT or 2)",
    )
    p.add_argument(
        "--sweep-scope",
        choices=("journal", "all"),
        default="journal",
        help="journal: netns this node touched; all: every netns on the machine (dedicated nodes)",
    )
