"""A pool of upstream keys (GEMINI_API_KEYS) through real gunicorn, against the simulator's
per-key quotas and faults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from app.upstream.key_pool import key_id
from tests.conftest import node_env, running_node
from tests.support.admin import heal, status
from tests.support.logs import events
from tests.support.processes import Service, start_node, wait_until
from tests.support.redis_server import RedisServer
from tests.support.simulator_client import SimulatorControl

KEYS = ("pool-key-one-s3cr3t-1111", "pool-key-two-s3cr3t-2222", "pool-key-three-s3cr3t-3333")
ADMIN = "pool-admin-s3cr3t-0123456789"
FIRST, SECOND = "gemini-3.8-flash", "gemini-3.5-flash"
PROMPT = {"contents": [{"parts": [{"text": "pooled"}]}]}
GEN = f"/v1beta/models/{FIRST}:generateContent"


def _id(key: str) -> str:
    return key_id(key)


@pytest.fixture(scope="module")
def pool_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """A node with three upstream keys."""
    with running_node(
        simulator_service,
        logs_dir,
        "pool-node",
        GEMINI_API_KEYS=",".join(KEYS),
        ADMIN_TOKEN=ADMIN,
        AUTO_HEAL_ENABLED="false",
    ) as service:
        yield service


@pytest.fixture
def pool_sim(simulator: SimulatorControl) -> SimulatorControl:
    """The simulator, reset, knowing the pool's keys."""
    simulator.add_keys(*KEYS)
    return simulator


@pytest.fixture
def node(pool_node: Service) -> Iterator[Service]:
    """The pool node, with every key back in the pool and no cooldown after each test."""
    yield pool_node
    _heal(pool_node, reset_keys="true", clear_cooldowns="true", reset_circuit_breaker="true")


def _heal(node: Service, **actions: str) -> None:
    heal(node, ADMIN, **actions)


def _generate(node: Service, model: str = FIRST) -> requests.Response:
    return requests.post(
        f"{node.url}/v1beta/models/{model}:generateContent", json=PROMPT, timeout=10
    )


def _until_tried(node: Service, sim: SimulatorControl, key: str) -> None:
    """Calls until one has gone out with `key` (each worker starts each call one key further
    along the pool, so a few suffice), all answered by the requested model."""
    for _ in range(12):
        assert _generate(node).headers["X-L104-Model"] == FIRST
        if sim.by_key().get(_id(key)):
            return
    raise AssertionError(f"no call went out with {_id(key)}")


def _status(node: Service) -> dict[str, Any]:
    return status(node, ADMIN)


def test_a_rate_limited_key_is_left_for_the_others(
    node: Service, pool_sim: SimulatorControl
) -> None:
    pool_sim.fault("429", key=KEYS[0], retry_delay="30s")  # key 1: every call, every model
    _until_tried(node, pool_sim, KEYS[0])
    warm = sum(pool_sim.by_key().values())
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: _generate(node), range(100)))
    assert [a.status_code for a in answers] == [200] * 100
    assert {a.headers["X-L104-Model"] for a in answers} == {FIRST}  # the requested model
    by_key = pool_sim.by_key()
    assert by_key[_id(KEYS[0])] == 1  # then it rested, node-wide, for RetryInfo's 30 s
    assert by_key[_id(KEYS[1])] + by_key[_id(KEYS[2])] == warm - 1 + 100
    assert abs(by_key[_id(KEYS[1])] - by_key[_id(KEYS[2])]) <= 10  # spread over the others
    keys = _status(node)["models"][FIRST]["keys"]
    assert keys[_id(KEYS[0])]["state"] == "cooling"
    assert keys[_id(KEYS[1])]["state"] == "usable"


def test_per_minute_quotas_of_two_keys(
    simulator_service: Service, logs_dir: Path, simulator: SimulatorControl
) -> None:
    two = KEYS[:2]
    simulator.add_keys(*two)
    quota = 6
    for key in two:
        simulator.quota(key, model=FIRST, per_minute=quota)
    with running_node(
        simulator_service, logs_dir, "two-key-node", GEMINI_API_KEYS=",".join(two)
    ) as node:
        served = [_generate(node).headers.get("X-L104-Model") for _ in range(2 * quota)]
        assert served == [FIRST] * (2 * quota)
        rotated = _generate(node)
        assert rotated.status_code == 200
        assert rotated.headers["X-L104-Model"] == SECOND  # both keys spent on FIRST


def test_a_revoked_key_is_disabled_alerted_and_reset(
    node: Service, pool_sim: SimulatorControl
) -> None:
    revoked = _id(KEYS[1])
    pool_sim.fault("invalid_key", key=KEYS[1])
    answers = [_generate(node) for _ in range(12)]
    assert [a.status_code for a in answers] == [200] * 12
    assert {a.headers["X-L104-Model"] for a in answers} == {FIRST}
    assert pool_sim.by_key()[revoked] == 1  # refused once: out of the pool, node-wide
    disabled = [e for e in events(node, "api_key_disabled") if e["key"] == revoked]
    assert disabled and disabled[-1]["reason"] == "API_KEY_INVALID"
    text = requests.get(f"{node.url}/metrics", timeout=5).text
    assert f'l104_upstream_key_disabled{{key="{revoked}"}} 1.0' in text
    assert f'l104_api_keys_disabled_total{{key="{revoked}"}} 1.0' in text
    status = _status(node)
    assert status["keys"][revoked]["usable"] is False
    assert status["models"][FIRST]["keys"][revoked]["state"] == "disabled"
    _heal(node, reset_keys="true")
    for _ in range(6):
        _generate(node)
    assert pool_sim.by_key()[revoked] >= 2  # tried again after reset_keys


def test_every_key_refused(node: Service, pool_sim: SimulatorControl) -> None:
    for key in KEYS:
        pool_sim.fault("permission_denied", key=key)
    answers = [_generate(node) for _ in range(5)]
    assert {a.status_code for a in answers} == {503}
    error = answers[-1].json()["error"]
    assert error["status"] == "UNAVAILABLE" and "every upstream key" in error["message"]
    assert "Retry-After" in answers[-1].headers
    ready = requests.get(f"{node.url}/ready", timeout=5)
    assert ready.status_code == 503
    assert ready.json()["usable_upstream_keys"] == 0
    assert set(ready.json()["unusable_models"].values()) == {"key_refused"}
    assert pool_sim.calls() == 3  # each key once
    pool_sim.reset()
    pool_sim.add_keys(*KEYS)
    _heal(node, reset_keys="true")
    assert requests.get(f"{node.url}/ready", timeout=5).status_code == 200
    assert _generate(node).status_code == 200


def test_no_key_in_any_answer(node: Service, pool_sim: SimulatorControl) -> None:
    pool_sim.fault("invalid_key", key=KEYS[0])
    pool_sim.fault("429", key=KEYS[1])
    for _ in range(6):
        _generate(node)
    texts = [
        json.dumps(_status(node)),
        requests.get(f"{node.url}/metrics", timeout=5).text,
        requests.get(f"{node.url}/metrics?format=json", timeout=5).text,
        requests.get(f"{node.url}/ready", timeout=5).text,
        requests.get(f"{node.url}/health", timeout=5).text,
        _generate(node, "gemini-unknown").text,
    ]
    for text in texts:
        for key in KEYS:
            assert key not in text


def test_two_nodes_on_one_redis_share_key_cooldowns(
    simulator_service: Service,
    logs_dir: Path,
    redis_server: RedisServer,
    simulator: SimulatorControl,
) -> None:
    redis.Redis.from_url(redis_server.url).flushdb()
    simulator.add_keys(*KEYS)
    env = node_env(
        simulator_service.url, GEMINI_API_KEYS=",".join(KEYS), STATE_URL=redis_server.url
    )
    a = start_node(logs_dir / "pool-redis-a.log", env)
    b = start_node(logs_dir / "pool-redis-b.log", env)
    try:
        for service in (a, b):
            wait_until(lambda n=service: len(events(n, "worker_ready")) == 2, 15, "workers")
        simulator.fault("429", key=KEYS[0], retry_delay="30s")
        for _ in range(3):  # one of these reaches key 1 on node a
            assert _generate(a).status_code == 200
        assert simulator.by_key()[_id(KEYS[0])] == 1
        answers = [_generate(b) for _ in range(12)]
        assert {r.headers["X-L104-Model"] for r in answers} == {FIRST}
        assert simulator.by_key()[_id(KEYS[0])] == 1  # node b knew: key 1 rests for FIRST
    finally:
        a.stop()
        b.stop()


def test_model_listings_skip_a_refused_key(node: Service, pool_sim: SimulatorControl) -> None:
    pool_sim.fault("invalid_key", key=KEYS[0])
    _until_tried(node, pool_sim, KEYS[0])  # refused: out of the pool
    refused = pool_sim.by_key()[_id(KEYS[0])]
    assert requests.get(f"{node.url}/v1beta/models", timeout=5).status_code == 200
    assert requests.get(f"{node.url}/v1beta/models/{FIRST}", timeout=5).status_code == 200
    assert requests.get(f"{node.url}/v1beta/openai/models", timeout=5).status_code == 200
    assert pool_sim.by_key()[_id(KEYS[0])] == refused  # the listings used another key
