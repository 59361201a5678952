"""Entry point: `python -m chaosbus.scheduler [--target-namespace NS] [--enable-filter-namespace]`."""

from chaosbus.common import service
from chaosbus.scheduler import app


def main(argv: list[str] | None = None) -> None:
    p = service.parser("scheduler", "Selection, desired phase and per-node commands", metrics_port=9102)
    service.add_scope_arguments(p)
    service.run("scheduler", p.parse_args(argv), app.main)


if __name__ == "__main__":
    main()
