"""Entry point: `python -m chaosbus.injector --node NAME [--journal PATH] [--lease-seconds S]`."""

from chaosbus.common import service
from chaosbus.injector import app, flags


def main(argv: list[str] | None = None) -> None:
    p = service.parser("injector", "Performs faults on this node's targets", metrics_port=9103)
    flags.add_arguments(p)
    service.run("injector", p.parse_args(argv), app.main)


if __name__ == "__main__":
    main()
