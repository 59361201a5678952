"""End-to-end fixtures: the live local-mode system from helpers.live."""

from helpers.live import system

__all__ = ["system"]
