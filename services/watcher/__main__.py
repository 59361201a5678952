"""Entry point: `python -m chaosbus.watcher` (local object store) or `--kube` (the Kubernetes API)."""

from chaosbus.common import service
from chaosbus.watcher import app


def main(argv: list[str] | None = None) -> None:
    p = service.parser("watcher", "Object store -> object events and target projection", metrics_port=9101)
    p.add_argument("--kube", action="store_true", help="watch the Kubernetes API instead of the local store")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (implies --kube; default: in-cluster)")
    service.add_scope_arguments(p)
    args = p.parse_args(argv)
    if args.kube or args.kubeconfig:
        from chaosbus.watcher import kube

        service.run("watcher", args, kube.main)
    else:
        service.run("watcher", args, app.main)


if __name__ == "__main__":
    main()
