"""The request deadline bounds every upstream attempt, retries and body reads included
(real simulator over HTTP, the node's upstream client in this process)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from app.errors import UpstreamTimeout
from app.settings import Settings
from app.upstream.backoff import Deadline
from app.upstream.client import UpstreamClient
from app.upstream.retry_policy import current_deadline
from tests.conftest import NODE_MODELS, UPSTREAM_KEY
from tests.support.simulator_client import SimulatorControl

MODEL = NODE_MODELS.split(",")[0]
BODY = b'{"contents":[{"parts":[{"text":"hi"}]}]}'
DEADLINE = 1.5
MARGIN = 0.3  # seconds past the deadline a call may take to notice and give up


def _client(simulator: SimulatorControl, timeout: str) -> UpstreamClient:
    settings = Settings.from_env(
        {
            "GEMINI_API_KEY": UPSTREAM_KEY,
            "GEMINI_API_BASE": f"{simulator.url}/v1beta",
            "GEMINI_MODELS": NODE_MODELS,
            "UPSTREAM_TIMEOUT": timeout,
            "MAX_RETRY_ATTEMPTS": "3",
            "RETRY_BACKOFF_BASE": "0.01",
        }
    )
    return UpstreamClient(settings)


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    token = current_deadline.set(Deadline(seconds))
    try:
        yield
    finally:
        current_deadline.reset(token)


def _timed(call: Callable[[], Any]) -> float:
    started = time.monotonic()
    with _deadline(DEADLINE), pytest.raises(UpstreamTimeout):
        call()
    return time.monotonic() - started


def test_retry_gets_only_what_is_left_of_the_deadline(simulator: SimulatorControl) -> None:
    """The first attempt ends after 1 s (upstream hangs up); the retry may wait 0.5 s more,
    not the full 2 s read timeout it started with."""
    simulator.fault("hang", model=MODEL, seconds=1)
    client = _client(simulator, "2,2")
    elapsed = _timed(lambda: client.generate(MODEL, BODY))
    assert simulator.calls() == 2, "the retry was not made"
    assert DEADLINE - 0.1 < elapsed < DEADLINE + MARGIN


def test_slow_body_stops_at_the_deadline(simulator: SimulatorControl) -> None:
    """Bytes trickle in well within the read timeout, but the whole body takes 4 s."""
    simulator.fault("slow_body", model=MODEL, ms=4000)
    client = _client(simulator, "2,3")
    elapsed = _timed(lambda: client.generate(MODEL, BODY))
    assert elapsed < DEADLINE + MARGIN
    assert client.health.errors == 0, "the deadline running out is not a connection failure"


def test_stream_stops_at_the_deadline(simulator: SimulatorControl) -> None:
    """A stream that started in time still ends by the deadline."""
    simulator.configure(stream_chunks=40, chunk_delay_ms=100)
    client = _client(simulator, "2,3")

    def read_stream() -> None:
        for _ in client.stream(MODEL, BODY):
            pass

    elapsed = _timed(read_stream)
    assert elapsed < DEADLINE + MARGIN


def test_a_read_timeout_is_not_retried_on_the_same_model(simulator: SimulatorControl) -> None:
    """No deadline here: the read timeout alone ends the call, after one attempt (the gateway
    asks the next model instead)."""
    simulator.fault("hang", model=MODEL, seconds=5)
    client = _client(simulator, "1,0.5")
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        client.count_tokens(MODEL, BODY)
    assert time.monotonic() - started < 0.5 + MARGIN
    assert simulator.calls() == 1
