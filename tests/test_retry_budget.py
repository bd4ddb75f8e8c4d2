"""The retry budget bounds extra upstream attempts (retries and rotations)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from urllib3.exceptions import MaxRetryError
from urllib3.response import HTTPResponse

from app.clock import FakeClock
from app.errors import ApiError, UpstreamUnavailable
from app.resilience.breaker import BreakerBoard
from app.resilience.cooldowns import CooldownPolicy, Cooldowns
from app.resilience.gateway import Gateway
from app.state import StateStore
from app.upstream.backoff import Backoff
from app.upstream.retry_budget import RetryBudget
from app.upstream.retry_policy import DeadlineRetry, current_budget
from tests.conftest import node_env
from tests.support.processes import Service, start_node
from tests.support.simulator_client import SimulatorControl


def test_budget_is_a_ratio_of_recent_requests_plus_an_allowance(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.2, allowance=2, window=10, clock=clock)
    for _ in range(10):
        budget.request()
    assert [budget.try_extra() for _ in range(5)] == [True] * 4 + [False]
    clock.advance(10.1)  # the window moved on: no requests, only the allowance
    assert [budget.try_extra() for _ in range(3)] == [True, True, False]


def test_urllib3_retries_stop_when_the_budget_is_spent(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0, allowance=1, clock=clock)
    retry = DeadlineRetry.for_gemini(5, Backoff(), sleep=lambda s: None)
    response = HTTPResponse(body=b"", status=503, preload_content=False)
    token = current_budget.set(budget)
    try:
        retry = retry.increment("POST", "/x", response=response)
        with pytest.raises(MaxRetryError):
            retry.increment("POST", "/x", response=response)
    finally:
        current_budget.reset(token)


def test_rotation_stops_when_the_budget_is_spent(store: StateStore, clock: FakeClock) -> None:
    board = BreakerBoard(store, fail_max=100, reset_timeout=60, max_probes=1, probe_ttl=30)
    budget = RetryBudget(ratio=0.5, allowance=0, clock=clock)
    gateway = Gateway(
        ("m1", "m2", "m3"),
        board.get,
        Cooldowns(store, CooldownPolicy()),
        store,
        clock,
        10,
        budget=budget,
    )
    calls: list[str] = []

    def down(model: str) -> str:
        calls.append(model)
        raise UpstreamUnavailable(503, "down", model=model)

    for _ in range(4):
        with pytest.raises(ApiError):
            gateway.call("m1", down)
    # 4 client calls: 4 first attempts and at most half as many extra ones.
    assert len(calls) <= 4 + 2


def test_no_retry_storm_through_real_gunicorn(
    simulator_service: Service, simulator: SimulatorControl, logs_dir: Path
) -> None:
    env = node_env(
        simulator_service.url,
        RETRY_BUDGET_RATIO="0.2",
        RETRY_BUDGET_MIN="0",
        MAX_RETRY_ATTEMPTS="3",
        CIRCUIT_BREAKER_THRESHOLD="1000",
        AUTO_HEAL_ENABLED="false",
    )
    node = start_node(logs_dir / "retry-budget.log", env)
    try:
        simulator.fault("503", model="*")
        codes = [
            requests.post(
                f"{node.url}/v1beta/models/gemini-3.8-flash:generateContent",
                json={"contents": [{"parts": [{"text": "x"}]}]},
                timeout=10,
            ).status_code
            for _ in range(50)
        ]
    finally:
        node.stop()
    assert set(codes) == {503}
    # Without a budget: 50 x 3 models x 4 attempts = 600 upstream calls. With it: 20 % more
    # than the client calls (each worker may round its share up by one).
    assert simulator.calls() <= 50 * 1.2 + 2
