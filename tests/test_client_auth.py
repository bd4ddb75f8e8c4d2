"""NODE_API_KEYS: clients must present a key; no key ever shows up in the node's logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import UPSTREAM_KEY, running_node
from tests.support.processes import Service
from tests.support.simulator_client import SimulatorControl

CLIENT_KEYS = ("client-s3cr3t-alpha-123456", "client-s3cr3t-beta-654321")
GEN = "/v1beta/models/gemini-3.8-flash:generateContent"
PROMPT = {"contents": [{"parts": [{"text": "hi"}]}]}


@pytest.fixture(scope="module")
def locked_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """A node that requires client keys, logging at DEBUG."""
    with running_node(
        simulator_service,
        logs_dir,
        "locked-node",
        NODE_API_KEYS=",".join(CLIENT_KEYS),
        LOG_LEVEL="DEBUG",
    ) as service:
        yield service


def test_missing_key_is_403(locked_node: Service, simulator: SimulatorControl) -> None:
    response = requests.post(f"{locked_node.url}{GEN}", json=PROMPT, timeout=5)
    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"
    assert simulator.calls() == 0


@pytest.mark.parametrize("wrong", ["nope", CLIENT_KEYS[0][:-1], CLIENT_KEYS[0] + "x", UPSTREAM_KEY])
def test_wrong_key_is_400_api_key_invalid(
    locked_node: Service, simulator: SimulatorControl, wrong: str
) -> None:
    response = requests.post(
        f"{locked_node.url}{GEN}", json=PROMPT, headers={"x-goog-api-key": wrong}, timeout=5
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["details"][0]["reason"] == "API_KEY_INVALID"
    assert wrong not in response.text
    assert simulator.calls() == 0


def test_valid_keys_as_header_or_query(locked_node: Service, simulator: SimulatorControl) -> None:
    by_header = requests.post(
        f"{locked_node.url}{GEN}",
        json=PROMPT,
        headers={"x-goog-api-key": CLIENT_KEYS[0]},
        timeout=5,
    )
    by_query = requests.post(
        f"{locked_node.url}{GEN}", params={"key": CLIENT_KEYS[1]}, json=PROMPT, timeout=5
    )
    assert by_header.status_code == by_query.status_code == 200
    assert all(r["api_key"] == UPSTREAM_KEY for r in simulator.requests())


def test_legacy_api_and_listing_need_a_key_too(
    locked_node: Service, simulator: SimulatorControl
) -> None:
    assert requests.post(f"{locked_node.url}/api/stream", json={"signal": "x"}).status_code == 403
    assert requests.get(f"{locked_node.url}/v1beta/models", timeout=5).status_code == 403
    assert requests.get(f"{locked_node.url}/health", timeout=5).status_code == 200


def test_no_key_appears_in_the_logs(locked_node: Service, simulator: SimulatorControl) -> None:
    headers = {"x-goog-api-key": CLIENT_KEYS[0]}
    requests.post(f"{locked_node.url}{GEN}", json=PROMPT, headers=headers, timeout=5)
    simulator.fault("500")
    requests.post(f"{locked_node.url}{GEN}", json=PROMPT, headers=headers, timeout=5)
    requests.post(f"{locked_node.url}{GEN}?key={CLIENT_KEYS[1]}", json=PROMPT, timeout=5)
    log = locked_node.log_text()
    assert "node_configured" in log  # the capture works
    for secret in (UPSTREAM_KEY, *CLIENT_KEYS):
        assert secret not in log
