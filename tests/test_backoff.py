"""Backoff, deadlines and the urllib3 retry policy, with injected randomness and time."""

from __future__ import annotations

import pytest
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError
from urllib3.response import HTTPResponse

from app.clock import FakeClock
from app.upstream.backoff import Backoff, Deadline
from app.upstream.retry_policy import DeadlineRetry, current_deadline
from app.upstream.timeouts import DeadlineTimeout


def test_ceiling_is_exponential_and_capped() -> None:
    backoff = Backoff(base=0.5, multiplier=2.0, cap=3.0)
    assert [backoff.ceiling(n) for n in (0, 1, 2, 3, 4)] == [0.0, 0.5, 1.0, 2.0, 3.0]
    assert Backoff(base=1, multiplier=3, cap=100).ceiling(3) == 9


def test_full_jitter_spans_zero_to_ceiling() -> None:
    backoff = Backoff(base=1.0, multiplier=2.0, cap=10.0)
    assert backoff.delay(3, rand=lambda: 0.0) == 0.0
    assert backoff.delay(3, rand=lambda: 0.5) == 2.0
    assert backoff.delay(3, rand=lambda: 0.999) == pytest.approx(3.996)


def test_deadline_with_fake_clock() -> None:
    clock = FakeClock()
    deadline = Deadline(10, clock)
    assert deadline.allows(9.9) and not deadline.allows(10)
    clock.advance(7)
    assert deadline.remaining() == pytest.approx(3)
    timeout = DeadlineTimeout(5, 60, deadline)
    assert (timeout.connect_timeout, timeout.read_timeout) == pytest.approx((3, 3))
    clock.advance(2)  # a retry later: urllib3 clones the timeout and reads it again
    retry_timeout = timeout.clone()
    retry_timeout.start_connect()
    assert (retry_timeout.connect_timeout, retry_timeout.read_timeout) == pytest.approx((1, 1))
    clock.advance(4)
    assert deadline.expired() and deadline.remaining() == 0


def _policy(sleeps: list[float], retries: int = 3) -> DeadlineRetry:
    return DeadlineRetry.for_gemini(
        retries, Backoff(base=1.0, multiplier=2.0, cap=30.0), rand=lambda: 0.5, sleep=sleeps.append
    )


def _response(status: int) -> HTTPResponse:
    return HTTPResponse(body=b"", status=status, preload_content=False)


def test_post_and_5xx_are_retried_with_growing_delays() -> None:
    sleeps: list[float] = []
    retry = _policy(sleeps)
    for status in (500, 502, 503, 504):
        assert retry.is_retry("POST", status)
    for status in (400, 401, 403, 404, 429):
        assert not retry.is_retry("POST", status)
    for _ in range(3):
        retry = retry.increment("POST", "/x", response=_response(503))
        retry.sleep()
    assert sleeps == [0.5, 1.0, 2.0]
    assert retry.retried == 3
    with pytest.raises(MaxRetryError):
        retry.increment("POST", "/x", response=_response(503))


def test_connection_errors_and_resets_are_retried() -> None:
    retry = _policy([])
    retry = retry.increment("POST", "/x", error=NewConnectionError(None, "refused"))  # type: ignore[arg-type]
    retry = retry.increment("POST", "/x", error=ProtocolError("Connection reset by peer"))
    assert retry.retried == 2


def test_no_retry_that_cannot_finish_before_the_deadline() -> None:
    clock = FakeClock()
    token = current_deadline.set(Deadline(1.2, clock))
    try:
        retry = _policy([])
        retry = retry.increment("POST", "/x", response=_response(503))  # delay 0.5: fits
        clock.advance(0.5)
        with pytest.raises(MaxRetryError):
            retry.increment("POST", "/x", response=_response(503))  # delay 1.0 > 0.7 left
    finally:
        current_deadline.reset(token)
