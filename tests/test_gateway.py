"""Rotation, cooldowns and breakers around one request, with an injected clock (no network)."""

from __future__ import annotations

import pytest

from app.clock import FakeClock
from app.errors import (
    ApiError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from app.resilience.breaker import BreakerBoard
from app.resilience.cooldowns import CooldownPolicy, Cooldowns, seconds_until_quota_reset
from app.resilience.gateway import Gateway
from app.state.sqlite_store import SqliteStateStore

MODELS = ("m1", "m2", "m3")


class Upstream:
    """A scripted upstream: per model, a list of outcomes (an exception or a value)."""

    def __init__(self) -> None:
        self.script: dict[str, list[object]] = {}
        self.calls: list[str] = []

    def __call__(self, model: str) -> str:
        self.calls.append(model)
        outcomes = self.script.get(model) or ["ok"]
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return f"{outcome} from {model}"


@pytest.fixture
def gateway(store: SqliteStateStore, clock: FakeClock) -> Gateway:
    board = BreakerBoard(store, fail_max=2, reset_timeout=60, max_probes=1, probe_ttl=30)
    cooldowns = Cooldowns(store, CooldownPolicy(default=30))
    return Gateway(MODELS, board.get, cooldowns, store, clock, deadline_seconds=10)


def _rate_limited(delay: float | None = 20, per_day: bool = False) -> UpstreamRateLimited:
    return UpstreamRateLimited("quota", retry_delay=delay, per_day=per_day, model="m1")


def test_requested_model_first_then_rotation_order(gateway: Gateway) -> None:
    assert gateway.candidates("m2") == ["m2", "m1", "m3"]
    assert gateway.candidates(None) == ["m1", "m2", "m3"]
    assert gateway.candidates("other") == []
    gateway.allow_unlisted = True
    assert gateway.candidates("other") == ["other", "m1", "m2", "m3"]


def test_429_rotates_and_cools_the_model_down(
    gateway: Gateway, store: SqliteStateStore, clock: FakeClock
) -> None:
    upstream = Upstream()
    upstream.script["m1"] = [_rate_limited(20)]
    assert gateway.call("m1", upstream) == ("ok from m2", "m2")
    assert gateway.call("m1", upstream) == ("ok from m2", "m2")
    assert upstream.calls == ["m1", "m2", "m2"]  # m1 not called during its cooldown
    assert store.model_errors() == {"m1": {"rate_limited": 1}}
    clock.advance(20.5)
    upstream.script["m1"] = ["ok"]
    assert gateway.call("m1", upstream) == ("ok from m1", "m1")


def test_cooldown_without_retry_info_uses_the_default(
    gateway: Gateway, store: SqliteStateStore, clock: FakeClock
) -> None:
    upstream = Upstream()
    upstream.script["m1"] = [_rate_limited(None)]
    gateway.call("m1", upstream)
    assert store.cooldowns()["m1"].until == pytest.approx(clock.now() + 30)


def test_per_day_quota_rests_until_midnight_pacific(
    gateway: Gateway, store: SqliteStateStore, clock: FakeClock
) -> None:
    upstream = Upstream()
    upstream.script["m1"] = [_rate_limited(5, per_day=True)]
    gateway.call("m1", upstream)
    cooldown = store.cooldowns()["m1"]
    assert cooldown.reason == "per_day_quota"
    assert cooldown.until == pytest.approx(clock.now() + seconds_until_quota_reset(clock.now()))


def test_every_model_cooling_down_is_429_at_once(gateway: Gateway) -> None:
    upstream = Upstream()
    for model, delay in zip(MODELS, (40, 12, 25), strict=True):
        upstream.script[model] = [_rate_limited(delay)]
    with pytest.raises(ApiError) as first:
        gateway.call("m1", upstream)
    assert first.value.code == 429
    upstream.calls.clear()
    with pytest.raises(ApiError) as caught:
        gateway.call("m1", upstream)
    assert upstream.calls == []
    error = caught.value
    assert error.code == 429 and error.status == "RESOURCE_EXHAUSTED"
    assert error.details[0]["retryDelay"] == "12.000s"
    assert error.headers["Retry-After"] == "12"
    assert error.fail_fast


def test_failures_open_breakers_then_fail_fast_then_recover(
    gateway: Gateway, clock: FakeClock
) -> None:
    upstream = Upstream()
    for model in MODELS:
        upstream.script[model] = [UpstreamUnavailable(503, "overloaded", model=model)]
    for _ in range(2):
        with pytest.raises(ApiError) as caught:
            gateway.call("m1", upstream)
        assert caught.value.code == 503
    assert len(upstream.calls) == 6
    upstream.calls.clear()
    with pytest.raises(ApiError) as fast:
        gateway.call("m1", upstream)
    assert upstream.calls == []
    assert fast.value.code == 503 and fast.value.fail_fast
    assert "circuit_open" in fast.value.message
    assert fast.value.headers["Retry-After"] == "60"
    clock.advance(61)
    for model in MODELS:
        upstream.script[model] = ["ok"]
    assert gateway.call("m1", upstream) == ("ok from m1", "m1")


def test_timeouts_count_against_the_breaker(gateway: Gateway) -> None:
    upstream = Upstream()
    upstream.script["m1"] = [UpstreamTimeout(model="m1")]
    for _ in range(2):
        assert gateway.call("m1", upstream)[1] == "m2"
    upstream.calls.clear()
    gateway.call("m1", upstream)
    assert upstream.calls == ["m2"]


def test_client_errors_do_not_rotate_or_trip(gateway: Gateway) -> None:
    upstream = Upstream()
    upstream.script["m1"] = [UpstreamRejected(400, "bad field", model="m1")]
    for _ in range(5):
        with pytest.raises(UpstreamRejected):
            gateway.call("m1", upstream)
    assert upstream.calls == ["m1"] * 5


def test_unknown_model_upstream_rotates(gateway: Gateway) -> None:
    upstream = Upstream()
    upstream.script["m1"] = [UpstreamRejected(404, "models/m1 is not found", model="m1")]
    assert gateway.call("m1", upstream) == ("ok from m2", "m2")


def test_deadline_stops_rotation(gateway: Gateway, clock: FakeClock) -> None:
    def slow(model: str) -> str:
        clock.advance(6)
        raise UpstreamTimeout(model=model)

    with pytest.raises(ApiError) as caught:
        gateway.call("m1", slow)
    assert caught.value.code == 504


def test_without_rotation_only_the_requested_model_is_tried(
    gateway: Gateway, clock: FakeClock
) -> None:
    """Embeddings: a 429 rests the model and answers 429 with its retry hint; no other
    model is ever called, then or during the cooldown."""
    assert gateway.candidates("m2", rotate=False) == ["m2"]
    upstream = Upstream()
    upstream.script["m1"] = [_rate_limited(20)]
    with pytest.raises(ApiError) as first:
        gateway.call("m1", upstream, rotate=False)
    assert first.value.code == 429
    assert first.value.headers["Retry-After"] == "20"
    with pytest.raises(ApiError) as resting:
        gateway.call("m1", upstream, rotate=False)
    assert resting.value.code == 429 and resting.value.fail_fast
    assert upstream.calls == ["m1"]
    clock.advance(20.5)
    upstream.script["m1"] = ["ok"]
    assert gateway.call("m1", upstream, rotate=False) == ("ok from m1", "m1")


def test_without_rotation_an_open_breaker_fails_fast(gateway: Gateway) -> None:
    upstream = Upstream()
    upstream.script["m1"] = [UpstreamUnavailable(503, "overloaded", model="m1")]
    for _ in range(2):  # fail_max=2
        with pytest.raises(ApiError):
            gateway.call("m1", upstream, rotate=False)
    with pytest.raises(ApiError) as refused:
        gateway.call("m1", upstream, rotate=False)
    assert refused.value.code == 503 and refused.value.fail_fast
    assert "Retry-After" in refused.value.headers
    assert upstream.calls == ["m1", "m1"]
