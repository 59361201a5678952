"""Entry point: `python -m chaosbus.scheduler [--target-namespace NS] [--enable-filter-namespace]`."""

import os
import socket

from chaosbus.common import config, service
from chaosbus.scheduler import app


def main(argv: list[str] | None = None) -> None:
    p = service.parser("scheduler", "Selection, desired phase and per-node commands", metrics_port=9102)
    service.add_scope_arguments(p)
    service.add_guard_arguments(p)
    p.add_argument("--cluster-injector", action="store_true",
                   default=os.environ.get("CHAOSBUS_CLUSTER_INJECTOR", "").lower() in ("1", "true", "yes"),
                   help="send API-level faults (PodChaos pod-kill, pod-failure) to the cluster injector "
                        "(`injector --cluster`) instead of the target's node (env CHAOSBUS_CLUSTER_INJECTOR=1)")
    p.add_argument("--instance", default=os.environ.get("CHAOSBUS_SCHEDULER_ID") or socket.gethostname(),
                   help="this instance's leader-lease holder id: stable across restarts (so a restarted "
                        "leader takes its lease back at once), unique among running schedulers")
    p.add_argument("--max-targets", type=int, default=config.env_int("CHAOSBUS_MAX_TARGETS", 5000),
                   help="most targets (status records) one experiment may select; more fails its selection "
                        "(env CHAOSBUS_MAX_TARGETS)")
    p.add_argument("--leader-ttl", type=float, default=app.LEADER_TTL_S,
                   help="seconds a leader lease lasts without renewal (renewed every ttl/3)")
    p.add_argument("--signing-key", default=None,
                   help="the scheduler's Ed25519 private key, signing every node command and lease "
                        "(default: <CHAOSBUS_KEYS_DIR or state dir/keys>/scheduler.key)")
    p.add_argument("--command-ttl", type=float, default=float(os.environ.get("CHAOSBUS_COMMAND_TTL", 300)),
                   help="seconds a node command stays valid: a node that gets it later refuses it")
    service.run("scheduler", p.parse_args(argv), app.main)


if __name__ == "__main__":
    main()
