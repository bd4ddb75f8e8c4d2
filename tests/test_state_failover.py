"""Redis down or slow: the node keeps going on local state, says so once, and comes back."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.clock import FakeClock
from app.state.failover import FailoverStateStore
from app.state.redis_store import RedisStateStore, redis_client
from app.state.sqlite_store import SqliteStateStore
from tests.support.processes import free_port
from tests.support.redis_server import RedisServer


class Lines(logging.Handler):
    """Collects the `event` of every record of the l104 state logger."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(getattr(record, "event", ""))


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("l104.state")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server this test may kill and restart."""
    server = RedisServer(free_port(), tmp_path / "redis").start()
    yield server
    server.stop()


def _store(server: RedisServer, tmp_path: Path, clock: FakeClock) -> FailoverStateStore:
    client = redis_client(server.url, timeout=0.05)
    return FailoverStateStore(
        RedisStateStore(client, clock), SqliteStateStore(tmp_path / "s.db", clock), 1.0
    )


def test_redis_down_then_back(
    own_redis: RedisServer, tmp_path: Path, clock: FakeClock, lines: Lines
) -> None:
    store = _store(own_redis, tmp_path, clock)
    store.set_cooldown("m1", clock.now() + 60, "rate_limited")
    assert store.backend == "redis" and "m1" in store.cooldowns()
    own_redis.stop()
    # Every call still answers, from local state, and the outage is logged once.
    store.set_cooldown("m2", clock.now() + 60, "rate_limited")
    assert set(store.cooldowns()) == {"m2"}
    assert store.breaker_transition("m3", None, "open")
    assert store.breaker("m3").state == "open"
    assert store.backend == "local"
    assert lines.events.count("state_backend_degraded") == 1
    own_redis.start()
    clock.advance(0.5)
    assert set(store.cooldowns()) == {"m2"}  # Redis is retried only after retry_after
    clock.advance(0.6)
    store.cooldowns()
    assert store.backend == "redis"
    assert "state_backend_restored" in lines.events


def test_hung_redis_is_not_waited_for(tmp_path: Path, clock: FakeClock, lines: Lines) -> None:
    """A Redis that accepts connections and never answers: calls time out (50 ms) and land
    locally."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        url = f"redis://127.0.0.1:{hole.getsockname()[1]}/0"
        store = FailoverStateStore(
            RedisStateStore(redis_client(url, timeout=0.05), clock),
            SqliteStateStore(tmp_path / "s.db", clock),
        )
        store.track_error("m1", "timeout")
        assert store.backend == "local"
        assert store.model_errors() == {"m1": {"timeout": 1}}
    assert lines.events == ["state_backend_degraded"]
