"""How a follower's handler is retried (a bug a few times and then skipped; NATS being away until
it is back or the patience is spent, then raised, ending the follower), and a reader's setup call
(asked again only while NATS is away)."""

from __future__ import annotations

import nats.errors
import pytest
from nats.js.errors import NotFoundError, ServiceUnavailableError

from chaosbus.common import ordered, patience


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


async def test_a_setup_call_is_asked_again_while_nats_is_away_and_not_for_a_permanent_error() -> None:
    answers: list[BaseException | str] = [nats.errors.NoRespondersError(), ServiceUnavailableError(), "bound"]

    async def setup() -> str:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    assert await patience.until_answered(setup, "x", first_backoff_s=0.001) == "bound"

    async def missing() -> str:
        raise NotFoundError

    with pytest.raises(NotFoundError):  # a stream that does not exist will not come by waiting
        await patience.until_answered(missing, "x", first_backoff_s=0.001)


async def test_a_setup_call_gives_up_after_its_patience() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    async def away() -> str:
        raise nats.errors.TimeoutError

    with pytest.raises(nats.errors.TimeoutError):
        await patience.until_answered(away, "x", patience_s=3.0, first_backoff_s=0.001, clock=clock)
