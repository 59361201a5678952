"""What the Kubernetes API not answering is (a refused or reset connection, a timeout, 5xx, 429)
and what is an answer to give to the caller at once (404, 409, 422, 403), how long to wait between
tries (doubling to a bound, or the server's Retry-After), and asking again until it answers."""

from __future__ import annotations

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from chaosbus.common import kubepatience as kp


def api_error(status: int, retry_after: str | None = None) -> ApiException:
    e = ApiException(status=status, reason="x")
    e.headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return e


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError("refused"),
        ConnectionResetError("reset"),
        TimeoutError(),
        aiohttp.ServerDisconnectedError(),
        api_error(500),
        api_error(503),
        api_error(429),
    ],
)
def test_the_api_not_answering(error: BaseException) -> None:
    assert kp.unanswered(error)


@pytest.mark.parametrize("error", [api_error(404), api_error(409), api_error(422), api_error(403), KeyError("bug")])
def test_an_answer_or_a_bug(error: BaseException) -> None:
    assert kp.unanswered(error) == ""


def test_the_wait_doubles_to_a_bound_and_a_retry_after_is_honoured_within_its_own() -> None:
    refused = ConnectionRefusedError()
    assert [kp.wait_s(a, refused) for a in (1, 2, 3, 4, 5, 6, 20)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert kp.wait_s(1, api_error(429, "7")) == 7.0
    assert kp.wait_s(1, api_error(503, "3600")) == kp.MAX_RETRY_AFTER_S
    assert kp.wait_s(1, api_error(429, "Wed, 21 Oct 2015 07:28:00 GMT")) == 0.2  # not seconds: our own wait


async def test_asked_again_until_it_answers_and_an_answer_raised_at_once() -> None:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    outcomes: list[BaseException | str] = [ConnectionRefusedError(), api_error(429, "2"), api_error(502), "ok"]

    async def call() -> str:
        got = outcomes.pop(0)
        if isinstance(got, BaseException):
            raise got
        return got

    assert await kp.until_answered(call, "test", sleep=sleep) == "ok"
    assert waits == [0.2, 2.0, 0.8]

    async def refused() -> str:
        raise api_error(422)

    with pytest.raises(ApiException):
        await kp.until_answered(refused, "test", sleep=sleep)
    assert len(waits) == 3
