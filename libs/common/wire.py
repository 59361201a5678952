"""The base of every wire message: a frozen msgspec Struct that omits defaults, so messages stay
small and new fields (with defaults) never break an older reader.
"""

from __future__ import annotations

import msgspec


class Message(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Base of wire messages."""
