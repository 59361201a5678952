"""How a follower's handler is retried: a bug a few times and then skipped, NATS being away until
it is back or the patience is spent (then raised, ending the follower)."""

from __future__ import annotations

import nats.errors
import pytest

from chaosbus.common import ordered


async def test_a_handler_bug_is_tried_a_few_times_then_skipped() -> None:
    calls: list[int] = []

    async def broken(n: int) -> None:
        calls.append(n)
        raise KeyError("bug")

    await ordered.handle(broken, 1, "s", first_backoff_s=0.001)  # returns: the follower goes on with the next message
    assert calls == [1] * ordered.BUG_ATTEMPTS


async def test_nats_away_is_waited_out_past_the_bug_attempts() -> None:
    calls: list[int] = []

    async def needs_nats(n: int) -> None:
        calls.append(n)
        if len(calls) <= ordered.BUG_ATTEMPTS + 2:
            raise nats.errors.NoRespondersError

    await ordered.handle(needs_nats, 7, "s", first_backoff_s=0.001)
    assert len(calls) == ordered.BUG_ATTEMPTS + 3  # the last one handled it


async def test_nats_away_for_longer_than_the_patience_is_raised() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    async def needs_nats(_: int) -> None:
        raise nats.errors.TimeoutError

    with pytest.raises(nats.errors.TimeoutError):
        await ordered.handle(needs_nats, 1, "s", patience_s=3.0, first_backoff_s=0.001, clock=clock)
