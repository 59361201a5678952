"""Entry point: `python -m chaosbus.watcher`."""

from chaosbus.common import service
from chaosbus.watcher import app


def main(argv: list[str] | None = None) -> None:
    p = service.parser("watcher", "Object store -> object events and target projection", metrics_port=9101)
    service.run("watcher", p.parse_args(argv), app.main)


if __name__ == "__main__":
    main()
