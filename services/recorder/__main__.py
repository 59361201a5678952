"""Entry point: `python -m chaosbus.recorder` (local object store) or `--kube` (the Kubernetes API)."""

from chaosbus.common import service
from chaosbus.recorder import app


def main(argv: list[str] | None = None) -> None:
    p = service.parser("recorder", "Status and finalizers written back to the objects", metrics_port=9104)
    p.add_argument("--kube", action="store_true", help="write to the Kubernetes API instead of the local store")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (implies --kube; default: in-cluster)")
    service.run("recorder", p.parse_args(argv), app.main)


if __name__ == "__main__":
    main()
