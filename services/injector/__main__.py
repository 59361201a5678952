"""Entry point: `python -m chaosbus.injector --node NAME`."""

from chaosbus.common import service
from chaosbus.injector import app


def main(argv: list[str] | None = None) -> None:
    p = service.parser("injector", "Performs faults on this node's targets", metrics_port=9103)
    p.add_argument("--node", default=None, help="node name (default: CHAOSBUS_NODE or the hostname)")
    service.run("injector", p.parse_args(argv), app.main)


if __name__ == "__main__":
    main()
