"""RATE_LIMIT: node-wide per-client limits, Gemini-format 429, cleared by healing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import node_env
from tests.support.processes import Service, start_node
from tests.support.simulator_client import SimulatorControl

ADMIN = "rate-admin-s3cr3t-0123456789"
GEN = "/v1beta/models/gemini-3.8-flash:generateContent"
PROMPT = {"contents": [{"parts": [{"text": "count me"}]}]}
LIMIT = 6


def _start(simulator_service: Service, logs_dir: Path, name: str, **extra: str) -> Service:
    env = node_env(simulator_service.url, RATE_LIMIT=f"{LIMIT}/minute", ADMIN_TOKEN=ADMIN, **extra)
    return start_node(logs_dir / f"{name}.log", env)


@pytest.fixture(scope="module")
def limited_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """Two workers, 6 requests a minute per client, no trusted proxy."""
    service = _start(simulator_service, logs_dir, "rate-limited-node")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def proxied_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """The same, trusting X-Forwarded-For from loopback (as behind a local nginx)."""
    service = _start(
        simulator_service, logs_dir, "rate-limited-proxied-node", TRUSTED_PROXIES="127.0.0.1"
    )
    yield service
    service.stop()


def _post(node: Service, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(f"{node.url}{GEN}", json=PROMPT, headers=headers or {}, timeout=10)


def _heal(node: Service) -> None:
    response = requests.post(
        f"{node.url}/self/heal?reset_rate_limits=true",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=5,
    )
    assert response.status_code == 200


def test_limit_holds_across_workers_and_answers_like_gemini(
    limited_node: Service, simulator: SimulatorControl
) -> None:
    _heal(limited_node)
    # New connections each time, so gunicorn spreads them over both workers.
    codes = [_post(limited_node).status_code for _ in range(LIMIT + 3)]
    assert codes == [200] * LIMIT + [429] * 3
    refused = _post(limited_node)
    error = refused.json()["error"]
    assert error["code"] == 429 and error["status"] == "RESOURCE_EXHAUSTED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert simulator.calls() == LIMIT


def test_forwarded_for_does_not_evade_without_trusted_proxies(
    limited_node: Service, simulator: SimulatorControl
) -> None:
    _heal(limited_node)
    codes = [
        _post(limited_node, {"X-Forwarded-For": f"10.0.0.{i}"}).status_code
        for i in range(LIMIT + 2)
    ]
    assert codes.count(429) == 2


def test_heal_clears_rate_limits(limited_node: Service, simulator: SimulatorControl) -> None:
    _heal(limited_node)
    for _ in range(LIMIT):
        _post(limited_node)
    assert _post(limited_node).status_code == 429
    _heal(limited_node)
    assert _post(limited_node).status_code == 200


def test_ops_and_admin_are_not_limited(limited_node: Service) -> None:
    _heal(limited_node)
    for _ in range(LIMIT + 2):
        assert requests.get(f"{limited_node.url}/health", timeout=5).status_code == 200


def test_trusted_proxy_clients_are_told_apart(
    proxied_node: Service, simulator: SimulatorControl
) -> None:
    _heal(proxied_node)
    alice = [_post(proxied_node, {"X-Forwarded-For": "203.0.113.7"}) for _ in range(LIMIT + 1)]
    bob = _post(proxied_node, {"X-Forwarded-For": "203.0.113.8"})
    assert [r.status_code for r in alice] == [200] * LIMIT + [429]
    assert bob.status_code == 200
