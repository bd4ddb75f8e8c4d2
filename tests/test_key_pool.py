"""The pool of upstream keys: ids, and the gateway trying the requested model on the pool's
other keys before rotating models, with per-(key, model) cooldowns and breakers and refused
keys taken out of the pool (injected clock, no network)."""

from __future__ import annotations

import pytest

from app.clock import FakeClock
from app.errors import (
    ApiError,
    UpstreamKeyRefused,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from app.resilience.breaker import BreakerBoard
from app.resilience.cooldowns import CooldownPolicy, Cooldowns, seconds_until_quota_reset
from app.resilience.gateway import Gateway
from app.simulator.key_ids import key_id as simulator_key_id
from app.state import StateStore
from app.upstream.key_pool import KeyPool, current_key, key_id

MODELS = ("m1", "m2")
SECRETS = ("first-s3cr3t-key-aaaa", "second-s3cr3t-key-bbbb", "third-s3cr3t-key-cccc")
POOL = KeyPool(SECRETS)
K1, K2, K3 = (k.id for k in POOL.keys)


def test_key_ids_are_stable_short_and_the_simulators() -> None:
    assert key_id(SECRETS[0]) == key_id(SECRETS[0]) != key_id(SECRETS[1])
    assert key_id(SECRETS[0]).startswith("key-") and len(key_id(SECRETS[0])) == 12
    assert all(simulator_key_id(s) == key_id(s) for s in SECRETS)
    assert all(s not in repr(POOL.keys) for s in SECRETS)


def test_state_names_of_pairs() -> None:
    assert POOL.route("m1", POOL.keys[1]) == f"m1@{K2}"
    single = KeyPool(["only"])
    assert single.route("m1", single.keys[0]) == "m1"  # a pool of one: the model's own name
    assert POOL.routes(["m1"]) == (f"m1@{K1}", f"m1@{K2}", f"m1@{K3}")


class KeyedUpstream:
    """A scripted upstream per (model, key id): an exception to raise, or "ok"."""

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], BaseException] = {}
        self.calls: list[tuple[str, str]] = []

    def __call__(self, model: str) -> str:
        key = current_key.get()
        assert key is not None, "the gateway sets the key of each attempt"
        self.calls.append((model, key.id))
        failure = self.script.get((model, key.id))
        if failure is not None:
            raise failure
        return f"ok from {model} with {key.id}"


@pytest.fixture
def gateway(store: StateStore, clock: FakeClock) -> Gateway:
    board = BreakerBoard(store, fail_max=2, reset_timeout=60, max_probes=1, probe_ttl=30)
    cooldowns = Cooldowns(store, CooldownPolicy(default=30))
    return Gateway(
        MODELS, board.get, cooldowns, store, clock, 10, keys=POOL, key_probe_interval=300
    )


def _quota(delay: float = 20) -> UpstreamRateLimited:
    return UpstreamRateLimited("quota", retry_delay=delay, per_day=False)


def test_calls_spread_over_the_keys(gateway: Gateway) -> None:
    upstream = KeyedUpstream()
    for _ in range(9):
        gateway.call("m1", upstream)
    used = [key for _, key in upstream.calls]
    assert sorted(used.count(k) for k in (K1, K2, K3)) == [3, 3, 3]


def test_a_rate_limited_key_rests_for_that_model_only(
    gateway: Gateway, store: StateStore, clock: FakeClock
) -> None:
    upstream = KeyedUpstream()
    upstream.script[("m1", K1)] = _quota(20)
    results = [gateway.call("m1", upstream) for _ in range(30)]
    assert all(model == "m1" for _, model in results)  # the requested model, always
    assert upstream.calls.count(("m1", K1)) == 1  # then it rested
    assert store.cooldowns()[f"m1@{K1}"].reason == "rate_limited"
    assert ("m2", K1) not in store.cooldowns()
    upstream.calls.clear()
    gateway.call("m2", upstream)
    gateway.call("m2", upstream)
    gateway.call("m2", upstream)
    assert ("m2", K1) in upstream.calls  # key 1 still serves the other model
    clock.advance(21)
    upstream.script.clear()
    upstream.calls.clear()
    for _ in range(3):
        gateway.call("m1", upstream)
    assert ("m1", K1) in upstream.calls


def test_every_key_rate_limited_rotates_to_the_next_model(gateway: Gateway) -> None:
    upstream = KeyedUpstream()
    for key in (K1, K2, K3):
        upstream.script[("m1", key)] = _quota()
    assert gateway.call("m1", upstream)[1] == "m2"
    assert [m for m, _ in upstream.calls] == ["m1", "m1", "m1", "m2"]
    upstream.calls.clear()
    assert gateway.call("m1", upstream)[1] == "m2"
    assert [m for m, _ in upstream.calls] == ["m2"]  # every pair rests: no call to m1


def test_a_model_failure_rotates_models_not_keys(gateway: Gateway) -> None:
    upstream = KeyedUpstream()
    for key in (K1, K2, K3):
        upstream.script[("m1", key)] = UpstreamUnavailable(503, "overloaded")
    assert gateway.call("m1", upstream)[1] == "m2"
    assert [m for m, _ in upstream.calls] == ["m1", "m2"]


def test_a_refused_key_leaves_the_pool_until_its_probe(
    gateway: Gateway, store: StateStore, clock: FakeClock
) -> None:
    upstream = KeyedUpstream()
    for model in MODELS:
        upstream.script[(model, K2)] = UpstreamKeyRefused("API_KEY_INVALID")
    results = [gateway.call(model, upstream) for model in ("m1", "m2") * 10]
    assert all(r[1] == m for r, m in zip(results, ("m1", "m2") * 10, strict=True))
    assert sum(1 for _, key in upstream.calls if key == K2) == 1  # refused once, then out
    assert store.cooldowns()[f"key@{K2}"].reason == "key_refused"
    clock.advance(301)  # the probe is due: the key is tried again, and refused again
    upstream.calls.clear()
    for _ in range(3):
        gateway.call("m1", upstream)
    assert ("m1", K2) in upstream.calls
    store.end_cooldowns([f"key@{K2}"])  # reset_keys
    assert f"key@{K2}" not in store.cooldowns()


def test_every_key_refused_is_a_clear_503(gateway: Gateway, store: StateStore) -> None:
    upstream = KeyedUpstream()
    for key in (K1, K2, K3):
        for model in MODELS:
            upstream.script[(model, key)] = UpstreamKeyRefused("PERMISSION_DENIED")
    with pytest.raises(ApiError) as first:
        gateway.call("m1", upstream)
    assert first.value.code == 503 and "every upstream key" in first.value.message
    assert len(upstream.calls) == 3  # each key once, then it left the pool
    upstream.calls.clear()
    with pytest.raises(ApiError) as later:
        gateway.call("m1", upstream)
    assert later.value.code == 503 and later.value.fail_fast
    assert upstream.calls == []
    for secret in SECRETS:
        assert secret not in later.value.message


def test_breakers_are_per_key_and_model(gateway: Gateway) -> None:
    upstream = KeyedUpstream()
    upstream.script[("m1", K1)] = UpstreamUnavailable(503, "overloaded")
    for _ in range(12):
        gateway.call("m1", upstream)
    # K1's m1 breaker opened after 2 failures; the other keys keep serving m1.
    assert upstream.calls.count(("m1", K1)) == 2
    assert sum(1 for m, k in upstream.calls if m == "m1" and k != K1) >= 8


def test_a_per_day_quota_rests_the_pair_until_midnight_pacific(
    gateway: Gateway, store: StateStore, clock: FakeClock
) -> None:
    upstream = KeyedUpstream()
    upstream.script[("m1", K1)] = UpstreamRateLimited("daily", retry_delay=5, per_day=True)
    assert gateway.call("m1", upstream)[1] == "m1"  # another key of the same model answered
    rest = store.cooldowns()[f"m1@{K1}"]
    assert rest.reason == "per_day_quota"
    assert rest.until == pytest.approx(clock.now() + seconds_until_quota_reset(clock.now()))
    assert not any(name.startswith("m2") for name in store.cooldowns())
