"""Several nodes act as one through Redis: cooldowns, breakers, heals and rate limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from tests.conftest import node_env
from tests.support.load import Load
from tests.support.logs import events
from tests.support.processes import Service, free_port, start_node, wait_until
from tests.support.redis_server import RedisServer
from tests.support.simulator_client import SimulatorControl

ADMIN = "cluster-admin-s3cr3t-0123456789"
FIRST = "gemini-3.8-flash"
PROMPT = {"contents": [{"parts": [{"text": "cluster"}]}]}


def _pair(
    simulator_service: Service, logs_dir: Path, name: str, state_url: str, **extra: str
) -> tuple[Service, Service]:
    env = node_env(
        simulator_service.url,
        STATE_URL=state_url,
        ADMIN_TOKEN=ADMIN,
        CIRCUIT_BREAKER_THRESHOLD="2",
        CIRCUIT_BREAKER_TIMEOUT="60",
        MAX_RETRY_ATTEMPTS="0",
        AUTO_HEAL_ENABLED="false",
        **extra,
    )
    a = start_node(logs_dir / f"{name}-a.log", env)
    b = start_node(logs_dir / f"{name}-b.log", env)
    for node in (a, b):
        wait_until(lambda n=node: len(events(n, "worker_ready")) == 2, 15, "two workers")
    return a, b


@pytest.fixture(scope="module")
def cluster(
    simulator_service: Service, logs_dir: Path, redis_server: RedisServer
) -> Iterator[tuple[Service, Service]]:
    """Two nodes, two workers each, on one Redis."""
    a, b = _pair(simulator_service, logs_dir, "cluster", redis_server.url)
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def nodes(
    cluster: tuple[Service, Service], redis_server: RedisServer
) -> Iterator[tuple[Service, Service]]:
    """The cluster with clean shared state."""
    redis.Redis.from_url(redis_server.url).flushdb()
    yield cluster
    redis.Redis.from_url(redis_server.url).flushdb()


def _generate(node: Service) -> requests.Response:
    return requests.post(
        f"{node.url}/v1beta/models/{FIRST}:generateContent", json=PROMPT, timeout=10
    )


def _heal(node: Service) -> requests.Response:
    return requests.post(
        f"{node.url}/self/heal", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    )


def test_a_429_seen_by_one_node_cools_the_model_on_all(
    nodes: tuple[Service, Service], simulator: SimulatorControl
) -> None:
    a, b = nodes
    simulator.fault("429", model=FIRST, retry_delay="30s")
    assert _generate(a).headers["X-L104-Model"] != FIRST
    answers = [_generate(b) for _ in range(10)]
    assert all(r.status_code == 200 and r.headers["X-L104-Model"] != FIRST for r in answers)
    assert simulator.stats()["by_model"][FIRST] == 1


def test_a_breaker_opened_via_one_node_fails_fast_on_the_other(
    nodes: tuple[Service, Service], simulator: SimulatorControl
) -> None:
    a, b = nodes
    simulator.fault("503", model="*")
    for _ in range(2):
        assert _generate(a).status_code == 503
    calls = simulator.calls()
    refused = _generate(b)
    assert refused.status_code == 503
    assert "circuit_open" in refused.json()["error"]["message"]
    assert simulator.calls() == calls
    assert requests.get(f"{b.url}/ready", timeout=5).status_code == 503


def test_a_heal_via_one_node_reaches_every_worker_of_the_other(
    nodes: tuple[Service, Service], simulator: SimulatorControl
) -> None:
    a, b = nodes
    simulator.fault("503", model="*")
    for _ in range(2):
        _generate(a)
    simulator.reset()
    response = _heal(a)
    assert response.status_code == 200
    generation = response.json()["generation"]
    assert _generate(b).status_code == 200  # B's breakers were closed by A's heal

    def applied_on_b() -> set[int]:
        return {
            e["worker_pid"] for e in events(b, "heal_applied") if generation in e["generations"]
        }

    wait_until(lambda: len(applied_on_b()) == 2, 2, "both workers of B to apply the heal")


@pytest.fixture(scope="module")
def limited_cluster(
    simulator_service: Service, logs_dir: Path, redis_server: RedisServer
) -> Iterator[tuple[Service, Service]]:
    """Two nodes sharing a rate limit of 6 a minute per client through Redis."""
    url = redis_server.url.rsplit("/", 1)[0] + "/1"
    a, b = _pair(simulator_service, logs_dir, "limited-cluster", url, RATE_LIMIT="6/minute")
    yield a, b
    a.stop()
    b.stop()


def test_a_rate_limit_is_cluster_wide(
    limited_cluster: tuple[Service, Service], simulator: SimulatorControl
) -> None:
    a, b = limited_cluster
    codes = [_generate(node).status_code for node in (a, b) * 5]
    assert sorted(codes) == [200] * 6 + [429] * 4
    assert simulator.calls() == 6


def _on_redis(node: Service) -> bool:
    ready = requests.get(f"{node.url}/ready", timeout=5).json()
    return bool(ready["state_backend"] == "redis" and ready["state_shared"])


def test_redis_killed_under_load_then_back(
    simulator_service: Service, simulator: SimulatorControl, logs_dir: Path, tmp_path: Path
) -> None:
    server = RedisServer(free_port(), tmp_path / "redis").start()
    a, b = _pair(simulator_service, logs_dir, "redis-outage", server.url)
    try:
        with (
            Load(
                lambda s: s.post(
                    f"{a.url}/v1beta/models/{FIRST}:generateContent", json=PROMPT, timeout=10
                ),
                clients=4,
            ) as load_a,
            Load(
                lambda s: s.post(
                    f"{b.url}/v1beta/models/{FIRST}:generateContent", json=PROMPT, timeout=10
                ),
                clients=4,
            ) as load_b,
        ):
            wait_until(lambda: load_a.total > 20 and load_b.total > 20, 10, "load")
            server.stop()
            seen = load_a.total + load_b.total
            wait_until(lambda: load_a.total + load_b.total > seen + 100, 20, "load on local")
            server.start()
            seen = load_a.total + load_b.total
            wait_until(lambda: load_a.total + load_b.total > seen + 100, 20, "load on Redis")
        assert load_a.failures() == {} and load_b.failures() == {}
        for node in (a, b):
            assert events(node, "state_backend_degraded")
            wait_until(lambda n=node: events(n, "state_backend_restored"), 10, "restored")
            # Each worker goes back to Redis on its own next try (within a second): /ready,
            # answered by either worker, says so for several calls in a row.
            wait_until(lambda n=node: all(_on_redis(n) for _ in range(6)), 10, "both on Redis")
        # Shared state works again: a cooldown set through A is seen by B.
        simulator.fault("429", model=FIRST, retry_delay="30s", count=1)
        assert _generate(a).headers["X-L104-Model"] != FIRST
        assert _generate(b).headers["X-L104-Model"] != FIRST
    finally:
        a.stop()
        b.stop()
        server.stop()


def test_a_node_boots_and_serves_while_redis_is_down(
    simulator_service: Service, simulator: SimulatorControl, logs_dir: Path
) -> None:
    env = node_env(
        simulator_service.url, STATE_URL=f"redis://127.0.0.1:{free_port()}/0", RATE_LIMIT="5/second"
    )
    node = start_node(logs_dir / "redis-never-up.log", env)
    try:
        assert [_generate(node).status_code for _ in range(3)] == [200] * 3
        ready = requests.get(f"{node.url}/ready", timeout=5).json()
        assert ready["ready"] and ready["state_backend"] == "local"
        assert events(node, "state_backend_degraded")
    finally:
        node.stop()
    assert "Traceback" not in node.log_text()
