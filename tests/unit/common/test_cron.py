"""Schedule times (libs/common/cron.py): every syntax Chaos Mesh's Schedule accepts, time zones,
and the O(1) "newest due fire" however many fires were missed.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaosbus.common import cron


def ts(text: str) -> float:
    return (
        datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
        if "+" not in text
        else datetime.fromisoformat(text).timestamp()
    )


def iso(t: float | None) -> str:
    assert t is not None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")


BASE = ts("2026-03-04T10:17:30")  # a Wednesday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*/5 * * * *", "2026-03-04T10:20:00"),
        ("0 12 * * *", "2026-03-04T12:00:00"),
        ("*/10 * * * * *", "2026-03-04T10:17:40"),  # leading seconds field
        ("0 0 */2 * * *", "2026-03-04T12:00:00"),
        ("@hourly", "2026-03-04T11:00:00"),
        ("@daily", "2026-03-05T00:00:00"),
        ("@midnight", "2026-03-05T00:00:00"),
        ("@weekly", "2026-03-08T00:00:00"),  # Sunday
        ("@monthly", "2026-04-01T00:00:00"),
        ("@yearly", "2027-01-01T00:00:00"),
        ("@annually", "2027-01-01T00:00:00"),
        ("30 9 * * 1-5", "2026-03-05T09:30:00"),
        ("CRON_TZ=UTC 0 11 * * *", "2026-03-04T11:00:00"),
    ],
)
def test_next_fire_of_every_syntax(text: str, expected: str) -> None:
    assert iso(cron.parse(text).next_after(BASE)) == expected


@pytest.mark.parametrize(
    ("prefix", "when", "expected_utc"),
    [
        ("TZ=America/New_York", "2026-01-10T00:00:00", "2026-01-10T14:00:00"),  # EST, UTC-5
        ("CRON_TZ=America/New_York", "2026-07-10T00:00:00", "2026-07-10T13:00:00"),  # EDT, UTC-4
        ("TZ=Asia/Kolkata", "2026-07-10T00:00:00", "2026-07-10T03:30:00"),  # UTC+5:30
    ],
)
def test_time_zone_prefix_moves_the_fire_with_the_zone_and_its_dst(prefix: str, when: str, expected_utc: str) -> None:
    assert iso(cron.parse(f"{prefix} 0 9 * * *").next_after(ts(when))) == expected_utc


def test_every_counts_whole_periods_from_the_anchor() -> None:
    spec = cron.parse("@every 1m30s")
    assert spec.every_s == 90
    anchor = ts("2026-03-04T10:00:00")
    assert iso(spec.next_after(anchor, anchor=anchor)) == "2026-03-04T10:01:30"
    assert iso(spec.next_after(ts("2026-03-04T10:01:30"), anchor=anchor)) == "2026-03-04T10:03:00"
    assert cron.parse("@every 500ms").every_s == 1  # robfig: at least one second


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty schedule"),
        ("* * * *", "expected 5 fields"),
        ("* * * * * * *", "got 7"),
        ("61 * * * *", "invalid cron expression"),
        ("@fortnightly", "unknown descriptor"),
        ("@every", "@every"),
        ("@every 5x", "@every: invalid duration"),
        ("@every -5s", "must be positive"),
        ("TZ=Mars/Olympus 0 * * * *", "unknown time zone 'Mars/Olympus'"),
        ("TZ=UTC", "empty schedule"),
    ],
)
def test_bad_schedules_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(cron.CronError, match=message):
        cron.parse(text)


def test_latest_is_the_newest_due_fire_and_none_when_nothing_is_due() -> None:
    spec = cron.parse("*/5 * * * *")
    assert iso(spec.latest(ts("2026-03-04T10:00:00"), ts("2026-03-04T10:17:30"))) == "2026-03-04T10:15:00"
    assert spec.latest(ts("2026-03-04T10:15:00"), ts("2026-03-04T10:17:30")) is None  # already fired
    assert iso(spec.latest(ts("2026-03-04T10:14:59"), ts("2026-03-04T10:15:00"))) == "2026-03-04T10:15:00"


def test_a_year_of_missed_per_second_fires_is_one_answer() -> None:
    spec = cron.parse("* * * * * *")
    since, now = ts("2025-03-04T10:00:00"), ts("2026-03-04T10:17:30.5")
    assert iso(spec.latest(since, now)) == "2026-03-04T10:17:30"


def test_an_expression_that_never_fires_gives_none() -> None:
    spec = cron.parse("0 0 30 2 *")  # February 30th
    assert spec.next_after(BASE) is None
    assert spec.latest(0, BASE) is None


@given(period=st.integers(1, 10_000), offset=st.floats(0, 1e6), gap=st.floats(0, 1e6))
def test_every_latest_is_a_fire_in_the_window_and_next_follows_it(period: int, offset: float, gap: float) -> None:
    spec = cron.CronSpec(f"@every {period}s", UTC, every_s=period)
    anchor = 1_700_000_000.0
    since, now = anchor + offset, anchor + offset + gap
    fire = spec.latest(since, now, anchor=anchor)
    if fire is None:
        nxt = spec.next_after(since, anchor=anchor)
        assert nxt is not None and nxt > now
    else:
        assert since < fire <= now and (fire - anchor) % period == 0
        assert spec.next_after(fire, anchor=anchor) == fire + period > now


@given(st.integers(0, 400 * 86400))
def test_cron_latest_never_passes_now_and_the_next_fire_is_after_now(offset: int) -> None:
    spec = cron.parse("15 */3 * * *")
    now = BASE + offset
    fire = spec.latest(0, now)
    nxt = spec.next_after(now)
    assert fire is not None and nxt is not None
    assert fire <= now < nxt and spec.next_after(fire) == nxt
