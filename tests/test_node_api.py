"""The Gemini-compatible API through real gunicorn and the real simulator, over raw HTTP."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.conftest import UPSTREAM_KEY
from tests.support.processes import Service
from tests.support.simulator_client import SimulatorControl

PROMPT = {"contents": [{"role": "user", "parts": [{"text": "Hello node"}]}]}
MODEL = "gemini-3.8-flash"


def _post(node: Service, path: str, body: object = PROMPT, **kw: object) -> requests.Response:
    return requests.post(f"{node.url}{path}", json=body, timeout=10, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_generate_content(node: Service, simulator: SimulatorControl, version: str) -> None:
    response = _post(node, f"/{version}/models/{MODEL}:generateContent")
    assert response.status_code == 200
    body = response.json()
    assert body["candidates"][0]["content"]["parts"][0]["text"].endswith("Hello node")
    assert body["modelVersion"] == MODEL
    assert response.headers["X-L104-Model"] == MODEL
    assert simulator.calls() == 1


def test_models_prefix_in_path_is_accepted(node: Service, simulator: SimulatorControl) -> None:
    response = _post(node, f"/v1beta/models/models/{MODEL}:generateContent")
    assert response.status_code == 200


def test_upstream_gets_the_node_key_as_header_and_never_the_client_key(
    node: Service, simulator: SimulatorControl
) -> None:
    response = _post(
        node,
        f"/v1beta/models/{MODEL}:generateContent?key=client-query-key",
        headers={"x-goog-api-key": "client-header-key"},
    )
    assert response.status_code == 200
    (seen,) = simulator.requests()
    assert seen["auth"] == "header"
    assert seen["api_key"] == UPSTREAM_KEY
    assert "client" not in json.dumps(seen)
    assert seen["body"] == PROMPT


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_sse_stream_arrives_chunk_by_chunk(
    node: Service, simulator: SimulatorControl, version: str
) -> None:
    simulator.configure(stream_chunks=5, chunk_delay_ms=200)
    started = time.monotonic()
    arrivals: list[float] = []
    events: list[dict[str, object]] = []
    with requests.post(
        f"{node.url}/{version}/models/{MODEL}:streamGenerateContent?alt=sse",
        json=PROMPT,
        stream=True,
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["X-L104-Model"] == MODEL
        for line in response.iter_lines(chunk_size=1):
            if line.startswith(b"data: "):
                arrivals.append(time.monotonic() - started)
                events.append(json.loads(line[6:]))
    assert len(events) == 5
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"  # type: ignore[index]
    # The first chunk arrives long before the last one was produced upstream.
    assert arrivals[-1] - arrivals[0] >= 0.6


def test_stream_without_alt_is_one_json_array(node: Service, simulator: SimulatorControl) -> None:
    simulator.configure(stream_chunks=3)
    response = _post(node, f"/v1beta/models/{MODEL}:streamGenerateContent")
    assert response.status_code == 200
    chunks = response.json()
    assert isinstance(chunks, list) and len(chunks) == 3
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text.endswith("Hello node")


def test_count_tokens_both_request_forms(node: Service, simulator: SimulatorControl) -> None:
    path = f"/v1beta/models/{MODEL}:countTokens"
    assert _post(node, path).json()["totalTokens"] > 0
    older = {"generateContentRequest": {"model": f"models/{MODEL}", **PROMPT}}
    assert _post(node, path, older).json()["totalTokens"] > 0


def test_list_and_get_models(node: Service, simulator: SimulatorControl) -> None:
    listing = requests.get(f"{node.url}/v1beta/models", params={"pageSize": 2}, timeout=5)
    assert listing.status_code == 200
    body = listing.json()
    assert len(body["models"]) == 2 and body["nextPageToken"]
    second = requests.get(
        f"{node.url}/v1/models", params={"pageToken": body["nextPageToken"]}, timeout=5
    ).json()
    assert second["models"][0]["name"] != body["models"][0]["name"]
    one = requests.get(f"{node.url}/v1beta/models/{MODEL}", timeout=5)
    assert one.status_code == 200
    assert one.json()["name"] == f"models/{MODEL}"


def test_upstream_errors_reach_the_client_in_gemini_format(
    node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("504", model="*")
    response = _post(node, f"/v1beta/models/{MODEL}:generateContent")
    assert response.status_code == 504
    assert response.json()["error"]["status"] == "DEADLINE_EXCEEDED"


def test_health(node: Service) -> None:
    body = requests.get(f"{node.url}/health", timeout=5).json()
    assert body["status"] == "ok"
    assert body["upstream"] == "custom"
    assert body["uptime_seconds"] >= 0
    assert body["requests_total"] >= 1
    assert "timestamp" in body
    assert UPSTREAM_KEY not in json.dumps(body)


def test_admin_endpoints_are_off_without_admin_token(node: Service) -> None:
    for method, path in (("POST", "/self/heal"), ("GET", "/self/status")):
        response = requests.request(
            method, f"{node.url}{path}", headers={"Authorization": "Bearer x"}, timeout=5
        )
        assert response.status_code == 403
        assert "Set ADMIN_TOKEN" in response.json()["error"]["message"]
