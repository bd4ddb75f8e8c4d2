"""Self-healing against the real simulator through real gunicorn with two workers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import requests

from tests.conftest import running_node
from tests.support.logs import events
from tests.support.processes import Service, wait_until
from tests.support.simulator_client import SimulatorControl

ADMIN_TOKEN = "admin-s3cr3t-for-tests-0123456789"
FIRST, SECOND = "gemini-3.8-flash", "gemini-3.5-flash"
PROMPT = {"contents": [{"parts": [{"text": "heal me"}]}]}
GEN = f"/v1beta/models/{FIRST}:generateContent"


@pytest.fixture(scope="module")
def healing_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """A node with small thresholds and short timeouts, and an admin token."""
    with running_node(
        simulator_service,
        logs_dir,
        "healing-node",
        ADMIN_TOKEN=ADMIN_TOKEN,
        CIRCUIT_BREAKER_THRESHOLD="3",
        CIRCUIT_BREAKER_TIMEOUT="2",
        MAX_RETRY_ATTEMPTS="1",
        RETRY_BACKOFF_BASE="0.01",
        HTTP_CLIENT_ERROR_THRESHOLD="3",
        AUTO_HEAL_ENABLED="false",
        REQUEST_DEADLINE="8",
    ) as service:
        yield service


@pytest.fixture
def node(healing_node: Service) -> Iterator[Service]:
    """The healing node, healed back to a clean state after each test."""
    yield healing_node
    _heal(healing_node)


def _heal(node: Service, query: str = "") -> requests.Response:
    return requests.post(
        f"{node.url}/self/heal{query}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )


def _generate(node: Service, model: str = FIRST) -> requests.Response:
    return requests.post(
        f"{node.url}/v1beta/models/{model}:generateContent", json=PROMPT, timeout=15
    )


def _many(node: Service, count: int, workers: int = 10) -> list[requests.Response]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda _: _generate(node), range(count)))


def test_429_storm_loses_nothing_and_rests_the_model(
    node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("429", model=FIRST, retry_delay="30s")
    first = _generate(node)
    assert first.status_code == 200
    assert first.headers["X-L104-Model"] == SECOND
    responses = _many(node, 30)
    assert [r.status_code for r in responses] == [200] * 30
    assert {r.headers["X-L104-Model"] for r in responses} == {SECOND}
    assert {r.json()["modelVersion"] for r in responses} == {SECOND}
    # One 429 put the model to rest node-wide: no worker called it again.
    assert simulator.stats()["by_model"].get(FIRST) == 1
    assert events(node, "model_rotation")
    status = requests.get(
        f"{node.url}/self/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5
    ).json()
    assert status["models"][FIRST]["cooldown_reason"] == "rate_limited"
    assert 25 < status["models"][FIRST]["cooldown_seconds"] <= 30
    assert status["models"][FIRST]["errors"] == {"rate_limited": 1}


def test_all_models_cooling_down_is_429_with_retry_hint(
    node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("429", model="*", retry_delay="20s")
    assert _generate(node).status_code == 429
    calls = simulator.calls()
    response = _generate(node)
    assert simulator.calls() == calls
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
    assert 1 <= int(response.headers["Retry-After"]) <= 20


def test_outage_opens_breakers_fails_fast_and_recovers(
    node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("503", model="*")
    for _ in range(3):
        assert _generate(node).status_code == 503
    calls = simulator.calls()
    fast = [_generate(node) for _ in range(20)]
    assert simulator.calls() == calls  # no upstream call while the breakers are open
    assert {r.status_code for r in fast} == {503}
    assert all("circuit_open" in r.json()["error"]["message"] for r in fast)
    assert all(1 <= int(r.headers["Retry-After"]) <= 2 for r in fast)
    assert len(events(node, "circuit_breaker_open")) >= 3
    simulator.reset()
    wait_until(lambda: _generate(node).status_code == 200, 5, "the breakers to close")
    assert events(node, "circuit_breaker_half_open")
    assert events(node, "circuit_breaker_closed")


def test_retry_then_success_is_logged(node: Service, simulator: SimulatorControl) -> None:
    simulator.fault("503", model=FIRST, count=1)
    response = _generate(node)
    assert response.status_code == 200
    assert response.headers["X-L104-Model"] == FIRST
    assert simulator.stats()["by_model"][FIRST] == 2
    assert any(e["model"] == FIRST for e in events(node, "retry_success"))


def test_connection_resets_replace_the_http_client(
    node: Service, simulator: SimulatorControl
) -> None:
    before = len(events(node, "http_client_auto_reset"))
    simulator.fault("reset", model="*")
    _many(node, 12, workers=4)
    simulator.reset()
    wait_until(lambda: len(events(node, "http_client_auto_reset")) > before, 5, "a client reset")
    _heal(node)
    assert _generate(node).status_code == 200


def test_stream_cut_after_first_byte_ends_with_an_error_event(
    node: Service, simulator: SimulatorControl
) -> None:
    simulator.configure(stream_chunks=4)
    simulator.fault("stream_cut", model=FIRST, after=2)
    with requests.post(
        f"{node.url}/v1beta/models/{FIRST}:streamGenerateContent?alt=sse",
        json=PROMPT,
        stream=True,
        timeout=10,
    ) as response:
        assert response.status_code == 200
        data = [line[6:] for line in response.iter_lines() if line.startswith(b"data: ")]
    assert len(data) == 3
    assert "candidates" in json.loads(data[0])
    assert json.loads(data[-1])["error"]["code"] == 503


def test_stream_failure_before_first_byte_rotates(
    node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("500", model=FIRST)
    with requests.post(
        f"{node.url}/v1beta/models/{FIRST}:streamGenerateContent?alt=sse",
        json=PROMPT,
        stream=True,
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["X-L104-Model"] == SECOND


def test_heal_clears_state_and_reaches_every_worker(
    node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("503", model="*")
    for _ in range(3):
        _generate(node)
    simulator.reset()
    assert _generate(node).status_code == 503  # still open
    response = _heal(node)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "OK"
    assert "reset_http_client" in body["actions"]
    assert any(a.startswith("reset_circuit_breaker") for a in body["actions"])
    generation = body["generation"]
    assert [_generate(node).status_code for _ in range(6)] == [200] * 6

    def applied_by() -> set[int]:
        return {
            e["worker_pid"] for e in events(node, "heal_applied") if generation in e["generations"]
        } | {
            e["worker_pid"]
            for e in events(node, "heal_requested")
            if e.get("generation") == generation
        }

    wait_until(lambda: len(applied_by()) >= 2, 5, "every worker to apply the heal")
    requested = next(e for e in events(node, "heal_requested") if e.get("generation") == generation)
    applied = [e for e in events(node, "heal_applied") if generation in e["generations"]]
    lag = max(_seconds(e["ts"]) - _seconds(requested["ts"]) for e in applied)
    assert lag <= 1.0, f"a worker applied the heal {lag:.2f}s after it was requested"


def _seconds(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def test_heal_options_choose_actions(node: Service, simulator: SimulatorControl) -> None:
    body = _heal(node, "?reset_rate_limits=true&reset_circuit_breaker=true").json()
    assert body["actions"] == ["reset_rate_limits", "reset_circuit_breaker"]
    assert _heal(node, "?level=medium").json()["actions"][-1] == "reset_http_client"
    assert _heal(node, "?level=extreme").status_code == 400
    assert _heal(node, "?format_disk=true").status_code == 400


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong",
        f"Basic {ADMIN_TOKEN}",
        f"Bearer {ADMIN_TOKEN}x",
        f"Bearer {ADMIN_TOKEN[:-1]}",
    ],
)
def test_admin_needs_the_token(node: Service, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path in (("POST", "/self/heal"), ("GET", "/self/status")):
        response = requests.request(method, f"{node.url}{path}", headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    assert ADMIN_TOKEN not in node.log_text()
    assert events(node, "admin_auth_failed")


def test_reset_lets_in_flight_requests_finish(node: Service, simulator: SimulatorControl) -> None:
    simulator.fault("latency", model=FIRST, ms=1500)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(_generate, node)
        wait_until(lambda: simulator.calls() >= 1, 5, "the slow call to reach upstream")
        for _ in range(4):  # reach both workers, whichever holds the slow call
            assert _heal(node, "?reset_http_client=true").status_code == 200
        response = slow.result(timeout=10)
    assert response.status_code == 200
    assert response.headers["X-L104-Model"] == FIRST


@pytest.fixture(scope="module")
def auto_heal_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """Auto-heal after 3 node-side errors; breakers that never trip; unlisted models allowed."""
    with running_node(
        simulator_service,
        logs_dir,
        "auto-heal-node",
        ADMIN_TOKEN=ADMIN_TOKEN,
        AUTO_HEAL_ERROR_THRESHOLD="3",
        AUTO_HEAL_MIN_INTERVAL="0",
        CIRCUIT_BREAKER_THRESHOLD="1000",
        MAX_RETRY_ATTEMPTS="0",
        ALLOW_UNLISTED_MODELS="true",
    ) as service:
        yield service


def test_error_storm_triggers_escalating_auto_heals(
    auto_heal_node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("504", model="*")
    levels = []
    for _ in range(3):
        codes = [_generate(auto_heal_node).status_code for _ in range(3)]
        assert codes == [504] * 3
        heals = events(auto_heal_node, "auto_heal_triggered")
        levels.append(heals[-1]["heal_level"] if heals else None)
    assert levels == ["light", "medium", "heavy"]
    heal = events(auto_heal_node, "auto_heal_triggered")[-1]
    assert heal["trigger"] == "auto_errors" and heal["errors"] >= 3
    assert "recycle_workers" in heal["actions"]
    assert events(auto_heal_node, "worker_recycle_requested")


def test_unlisted_models_when_allowed(auto_heal_node: Service, simulator: SimulatorControl) -> None:
    unlisted = "gemini-3.1-pro-preview"
    response = _generate(auto_heal_node, unlisted)
    assert response.status_code == 200
    assert response.headers["X-L104-Model"] == unlisted
    unknown = _generate(auto_heal_node, "gemini-nonexistent")
    assert unknown.status_code == 200  # upstream 404 for it, then the first listed model
    assert unknown.headers["X-L104-Model"] == FIRST
