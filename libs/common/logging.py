"""structlog set-up: JSON lines on stderr, experiment and target ids bound through contextvars.

structlog is imported on first use, not with this module: it costs ~35 ms of start-up (more with
`rich` installed, which structlog's console renderer picks up), and a CLI command that never logs
should not pay it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any


def configure(service: str, *, level: str = "info", json: bool = True) -> None:
    """Configure structlog once per process; every line carries `service`."""
    import structlog

    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


class _Logger:
    """structlog's logger for `name`, created when a line is first logged."""

    __slots__ = ("_name", "_log")

    def __init__(self, name: str) -> None:
        self._name = name
        self._log: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._log is None:
            import structlog

            self._log = structlog.get_logger(self._name)
        return getattr(self._log, attr)


_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


def redact(text: str) -> str:
    """`text` with the user and password (or token) of every URL in it replaced by `***`."""
    return _URL_USERINFO.sub("***@", text)


def _redact_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """No log line carries a credential: a NATS URL may hold one (nats://user:password@host)."""
    return {k: redact(v) if isinstance(v, str) and "://" in v else v for k, v in event.items()}


def get(name: str = "chaosbus") -> Any:
    return _Logger(name)


def bound(**ids: str) -> Any:
    """Bind experiment/target ids for the current task (contextvars are per asyncio task)."""
    import structlog

    return structlog.contextvars.bound_contextvars(**ids)
