"""Entry point: `python -m chaosbus.authcallout --issuer-seed FILE [--kubeconfig PATH]` (cluster mode)."""

from chaosbus.authcallout import app
from chaosbus.common import service


def main(argv: list[str] | None = None) -> None:
    p = service.parser("auth", "Gives each node injector its own node's NATS user (auth callout)", metrics_port=9105)
    app.add_arguments(p)
    service.run("auth", p.parse_args(argv), app.main)


if __name__ == "__main__":
    main()
