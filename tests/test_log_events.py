"""Every healing action and state change is one JSON log line with its tag."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import UPSTREAM_KEY, running_node
from tests.support.logs import events
from tests.support.processes import Service, wait_until
from tests.support.simulator_client import SimulatorControl

FIRST = "gemini-3.8-flash"
PROMPT = {"contents": [{"parts": [{"text": "log me"}]}]}
# circuit_breaker_half_open needs a quiet breaker timeout, which this node's fast watchdog
# never leaves: test_self_healing.py checks that line.
TAGS = (
    "retry_success",
    "model_cooldown",
    "model_rotation",
    "http_client_auto_reset",
    "circuit_breaker_open",
    "circuit_breaker_closed",
    "auto_heal_triggered",
    "watchdog_heal",
)


@pytest.fixture(scope="module")
def events_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """Small thresholds everywhere and a fast watchdog that only heals."""
    with running_node(
        simulator_service,
        logs_dir,
        "events-node",
        CIRCUIT_BREAKER_THRESHOLD="2",
        CIRCUIT_BREAKER_TIMEOUT="1",
        HTTP_CLIENT_ERROR_THRESHOLD="2",
        AUTO_HEAL_ERROR_THRESHOLD="2",
        MAX_RETRY_ATTEMPTS="1",
        WATCHDOG_INTERVAL="0.3",
        WATCHDOG_EXIT_ON_FAILURE="false",
        WEB_CONCURRENCY="1",
    ) as service:
        yield service


def _generate(node: Service, **headers: str) -> requests.Response:
    return requests.post(
        f"{node.url}/v1beta/models/{FIRST}:generateContent",
        json=PROMPT,
        headers=headers,
        timeout=15,
    )


def _ready_models(node: Service) -> int:
    return len(requests.get(f"{node.url}/ready", timeout=5).json()["usable_models"])


def test_each_situation_logs_its_tag(events_node: Service, simulator: SimulatorControl) -> None:
    simulator.fault("503", model=FIRST, count=1)
    assert _generate(events_node).status_code == 200  # retry_success
    simulator.fault("429", model=FIRST, retry_delay="0.5s", count=1)
    assert _generate(events_node).status_code == 200  # model_cooldown, model_rotation
    wait_until(lambda: _ready_models(events_node) == 3, 5, "the cooldown to end")
    simulator.fault("reset", model="*")

    def storm() -> bool:  # resets: client resets, breakers open, errors, heals
        _generate(events_node)
        return bool(events(events_node, "watchdog_heal"))

    wait_until(storm, 10, "the watchdog to find every breaker open and heal")
    simulator.reset()
    wait_until(lambda: _generate(events_node).status_code == 200, 10, "recovery")
    wait_until(lambda: events(events_node, "circuit_breaker_closed"), 5, "a breaker to close")
    for tag in TAGS:
        found = events(events_node, tag)
        assert found, f"no {tag} line"
        for entry in found:
            assert {"ts", "level", "event", "worker_pid", "request_id"} <= entry.keys()
    assert events(events_node, "watchdog_heal")[0]["failed_checks"]["upstream"]
    assert events(events_node, "model_cooldown")[0]["model"] == FIRST


def test_request_id_is_echoed_and_logged(events_node: Service, simulator: SimulatorControl) -> None:
    response = _generate(events_node, **{"X-Request-ID": "trace-abc-123"})
    assert response.headers["X-Request-ID"] == "trace-abc-123"
    generated = _generate(events_node).headers["X-Request-ID"]
    assert len(generated) == 32
    access = [e for e in events(events_node, "access") if e["request_id"] == "trace-abc-123"]
    assert access and access[0]["status"] == 200
    bad = _generate(events_node, **{"X-Request-ID": "x" * 500}).headers["X-Request-ID"]
    assert bad != "x" * 500


def test_every_line_is_json_and_free_of_secrets(events_node: Service) -> None:
    requests.post(
        f"{events_node.url}/v1beta/models/{FIRST}:generateContent?key=client-query-secret-1",
        json=PROMPT,
        timeout=10,
    )
    lines = [line for line in events_node.log_text().splitlines() if line.strip()]
    for line in lines:
        json.loads(line)
    text = "\n".join(lines)
    assert UPSTREAM_KEY not in text
    assert "client-query-secret-1" not in text
