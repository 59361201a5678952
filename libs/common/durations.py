"""Go-style durations (`30s`, `1h30m`, `1.5ms`) as Chaos Mesh's `duration` fields spell them."""

from __future__ import annotations

import math
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# Go's time.Duration is an int64 of nanoseconds: ParseDuration refuses anything longer (~292 years).
MAX_SECONDS = (2**63 - 1) / 1e9
_PART = re.compile(r"([0-9]*\.?[0-9]+|[0-9]+\.)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Return the duration in seconds; raise ValueError naming the bad text.

    Accepts what Go's time.ParseDuration accepts: an optional sign, then one or more
    number+unit parts, or a bare "0".
    """
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {_short(text)} (expected e.g. 30s, 5m, 1h30m)")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
        if not math.isfinite(total) or total > MAX_SECONDS:
            raise ValueError(f"invalid duration {_short(text)} (longer than Go's maximum, about 2562047h)")
    return sign * total


def _short(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def format_duration(seconds: float) -> str:
    """Render seconds the short way Go prints them (`1m30s`, `250ms`)."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:g}ms"
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    out = ""
    if h:
        out += f"{int(h)}h"
    if m or (h and s):
        out += f"{int(m)}m"
    if s or not out:
        out += f"{s:g}s"
    return sign + out
