"""Entry point: `python -m chaosbus.recorder`."""

from chaosbus.common import service
from chaosbus.recorder import app


def main(argv: list[str] | None = None) -> None:
    p = service.parser("recorder", "Status and finalizers written back to the objects", metrics_port=9104)
    service.run("recorder", p.parse_args(argv), app.main)


if __name__ == "__main__":
    main()
