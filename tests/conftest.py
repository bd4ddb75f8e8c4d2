"""Session fixtures: one real simulator and one real gunicorn node in front of it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from app.clock import FakeClock
from app.state import StateStore
from app.state.failover import FailoverStateStore
from app.state.redis_store import RedisStateStore
from app.state.sqlite_store import SqliteStateStore
from tests.support.processes import Service, free_port, start_node, start_simulator
from tests.support.redis_server import RedisServer
from tests.support.simulator_client import SimulatorControl

UPSTREAM_KEY = "upstream-s3cr3t-key-0123456789"
NODE_MODELS = "gemini-3.8-flash,gemini-3.5-flash,gemini-2.5-flash-lite"
MAX_REQUEST_BYTES = 256 * 1024


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test says so."""
    return FakeClock()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the whole session."""
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> StateStore:
    """A fresh state store on the fake clock: the node's SQLite, or Redis (shared by nodes)
    with that SQLite behind it."""
    local = SqliteStateStore(tmp_path / "state.db", clock)
    if request.param == "sqlite":
        return local
    server: RedisServer = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.flushdb()
    return FailoverStateStore(RedisStateStore(client, clock), local)


# Every key and token the tests hand to a node contains this mark.
SECRET_MARK = "s3cr3t"


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where every process started by the tests writes its output. After the whole suite,
    no line of any of it may hold a key or a token."""
    path = tmp_path_factory.mktemp("logs")
    yield path
    leaks = [
        f"{log.name}:{number}"
        for log in sorted(path.rglob("*.log"))
        for number, line in enumerate(log.read_text(errors="replace").splitlines(), 1)
        if SECRET_MARK in line
    ]
    assert not leaks, f"secrets in the logs: {leaks[:10]}"


@pytest.fixture(scope="session")
def simulator_service(logs_dir: Path) -> Iterator[Service]:
    """The Gemini simulator, running as its own process."""
    service = start_simulator(logs_dir / "simulator.log", UPSTREAM_KEY)
    yield service
    service.stop()


@pytest.fixture
def simulator(simulator_service: Service) -> SimulatorControl:
    """Control of the shared simulator, reset for each test."""
    control = SimulatorControl(simulator_service.url, UPSTREAM_KEY)
    control.reset()
    return control


def node_env(simulator_url: str, **extra: str) -> dict[str, str]:
    """The environment of a node in front of the test simulator."""
    return {
        "GEMINI_API_KEY": UPSTREAM_KEY,
        "GEMINI_API_BASE": f"{simulator_url}/v1beta",
        "GEMINI_MODELS": NODE_MODELS,
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "16",
        "UPSTREAM_TIMEOUT": "2,5",
        "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "RETRY_BACKOFF_BASE": "0.01",
        "REQUEST_DEADLINE": "8",
        # Tests of rotation and breakers fail on purpose, often: the budget has its own tests.
        "RETRY_BUDGET_MIN": "1000",
        **extra,
    }


@contextmanager
def running_node(
    simulator_service: Service, logs_dir: Path, name: str, **settings: str
) -> Iterator[Service]:
    """A node in front of the test simulator with `settings` on top of `node_env`, logging to
    `name`.log; stopped when the block ends."""
    service = start_node(logs_dir / f"{name}.log", node_env(simulator_service.url, **settings))
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """Real gunicorn (2 workers of the default class) with gunicorn.conf.py, open to any client."""
    with running_node(simulator_service, logs_dir, "node") as service:
        yield service
