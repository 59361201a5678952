"""structlog set-up: JSON lines on stderr, experiment and target ids bound through contextvars."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(service: str, *, level: str = "info", json: bool = True) -> None:
    """Configure structlog once per process; every line carries `service`."""
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def get(name: str = "chaosbus") -> Any:
    return structlog.get_logger(name)


def bound(**ids: str) -> Any:
    """Bind experiment/target ids for the current task (contextvars are per asyncio task)."""
    return structlog.contextvars.bound_contextvars(**ids)
