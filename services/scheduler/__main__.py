"""Entry point: `python -m chaosbus.scheduler [--target-namespace NS] [--enable-filter-namespace]`."""

import socket

from chaosbus.common import service, settings
from chaosbus.scheduler import app


def main(argv: list[str] | None = None) -> None:
    env = settings.current()
    p = service.parser("scheduler", "Selection, desired phase and per-node commands", metrics_port=9102)
    service.add_scope_arguments(p)
    service.add_guard_arguments(p)
    p.add_argument(
        "--cluster-injector",
        action="store_true",
        default=env.cluster_injector,
        help="send API-level faults (PodChaos pod-kill, pod-failure) to the cluster injector "
        "(`injector --cluster`) instead of the target's node (env CHAOSBUS_CLUSTER_INJECTOR=1)",
    )
    p.add_argument(
        "--instance",
        default=env.scheduler_id or socket.gethostname(),
        help="this instance's leader-lease holder id: stable across restarts (so a restarted "
        "leader takes its lease back at once), unique among running schedulers",
    )
    p.add_argument(
        "--max-targets",
        type=int,
        default=env.max_targets,
        help="most targets (status records) one experiment may select; more fails its selection "
        "(env CHAOSBUS_MAX_TARGETS)",
    )
    p.add_argument(
        "--leader-ttl",
        type=float,
        default=env.leader_seconds,
        help="seconds a leader lease lasts without renewal (renewed every ttl/3)",
    )
    p.add_argument(
        "--signing-key",
        default=None,
        help="the scheduler's Ed25519 private key, signing every node command and lease "
        "(default: <CHAOSBUS_KEYS_DIR or state dir/keys>/scheduler.key)",
    )
    p.add_argument(
        "--command-ttl",
        type=float,
        default=env.command_ttl,
        help="seconds a node command stays valid: a node that gets it later refuses it",
    )
    service.run("scheduler", p.parse_args(argv), app.main)


if __name__ == "__main__":
    main()
