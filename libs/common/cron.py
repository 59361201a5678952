"""Schedule times in Chaos Mesh's syntax (robfig/cron v3, as its Schedule accepts it), on top of
croniter rather than a parser of our own:

* standard cron, 5 fields, or 6 with a leading seconds field;
* descriptors `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`;
* `@every <Go duration>` (whole seconds, at least 1 s, counted from an anchor: the Schedule's
  creation), which croniter does not know;
* an optional `TZ=<zone>` or `CRON_TZ=<zone>` prefix (IANA names; default UTC).

Times are Unix seconds (floats); every fire time is a whole second. `latest(since, now)` answers
"which fire is due" in O(1), however many were missed, so a long outage never loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from chaosbus.common.durations import parse_duration

DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_EPSILON = 1e-3  # croniter's get_prev is strict: look from just after `now` to include a fire at `now`


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class CronSpec:
    text: str
    zone: tzinfo
    expr: str = ""  # croniter expression (fields or descriptor)
    every_s: int = 0  # @every: the period; 0 for cron expressions

    def next_after(self, t: float, anchor: float = 0.0) -> float | None:
        """The first fire strictly after `t` (None: the expression never fires, e.g. Feb 30)."""
        if self.every_s:
            k = max(0, math.floor((t - anchor) / self.every_s)) + 1
            return anchor + k * self.every_s
        try:
            return float(self._iter(t).get_next(float))
        except CroniterBadDateError:
            return None

    def latest(self, since: float, now: float, anchor: float = 0.0) -> float | None:
        """The newest fire time in (since, now], or None: one answer however many fires were missed."""
        if now <= since:
            return None
        if self.every_s:
            k = math.floor((now - anchor) / self.every_s)
            fire = anchor + k * self.every_s
        else:
            try:
                fire = float(self._iter(now + _EPSILON).get_prev(float))
            except CroniterBadDateError:
                return None
        return fire if since < fire <= now else None

    def _iter(self, t: float) -> croniter:
        start = datetime.fromtimestamp(t, UTC).astimezone(self.zone)
        return croniter(self.expr, start, second_at_beginning=True)


def parse(text: str) -> CronSpec:
    """Parse a Schedule's `spec.schedule`; CronError says what is wrong."""
    zone: tzinfo = UTC
    body = text.strip()
    if body.startswith(("TZ=", "CRON_TZ=")):
        prefix, _, body = body.partition(" ")
        name = prefix.split("=", 1)[1]
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise CronError(f"unknown time zone {name!r}") from None
        body = body.strip()
    if not body:
        raise CronError("empty schedule")
    if body.startswith("@every"):
        return CronSpec(text, zone, every_s=_every(body[len("@every") :].strip()))
    if body.startswith("@"):
        if body not in DESCRIPTORS:
            raise CronError(
                f"unknown descriptor {body!r}; expected @every <duration> or one of {', '.join(DESCRIPTORS)}"
            )
        return CronSpec(text, zone, expr=body)
    fields = body.split()
    if len(fields) not in (5, 6):
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week) or 6 with leading "
            f"seconds, got {len(fields)}"
        )
    try:
        croniter(body, datetime(2000, 1, 1, tzinfo=UTC), second_at_beginning=True)
    except (CroniterError, ValueError, KeyError) as e:
        raise CronError(f"invalid cron expression {body!r}: {e}") from None
    return CronSpec(text, zone, expr=body)


def _every(text: str) -> int:
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise CronError(f"@every: {e}") from None
    if seconds <= 0:
        raise CronError(f"@every: the period must be positive, got {text!r}")
    return max(1, int(seconds))  # robfig: sub-second parts are dropped, and 1 s is the minimum
