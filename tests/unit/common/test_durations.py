"""Go-style durations: what time.ParseDuration accepts and refuses, and the short rendering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaosbus.common.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("+0", 0.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2h45m10s", 9910.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("5.s", 5.0),
        ("300ms", 0.3),
        ("10us", 1e-5),
        ("10µs", 1e-5),  # U+00B5 micro sign
        ("10μs", 1e-5),  # U+03BC greek mu
        ("100ns", 1e-7),
        ("1m1m", 120.0),  # Go allows repeated units
        ("+10s", 10.0),
        ("-1.5h", -5400.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "30",
        "1.5",
        "s",
        "1d",
        "1w",
        "1h 30m",
        "1e3s",
        "1.2.3s",
        "5mm",
        "5m5",
        "--1s",
        "1H",
        ".s",
        "ms",
        "1_000s",
        "sixty seconds",
    ],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["1d", "30"])
def test_parse_error_quotes_the_text_and_an_example(text: str) -> None:
    with pytest.raises(ValueError, match=rf"invalid duration '{text}' \(expected e.g. 30s"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (0.0015, "1.5ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59, "59s"),
        (60, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (3601, "1h0m1s"),
        (3660, "1h1m"),
        (5400, "1h30m"),
        (86400, "24h"),
        (-90, "-1m30s"),
        (-0.5, "-500ms"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=-10 * 86400, max_value=10 * 86400))
def test_whole_seconds_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@given(st.integers(min_value=1, max_value=999))
def test_milliseconds_round_trip(millis: int) -> None:
    assert parse_duration(format_duration(millis / 1000)) == pytest.approx(millis / 1000)
