"""The original L104 node's `/api/v6/stream` and `/api/stream`."""

from __future__ import annotations

import pytest
import requests

from tests.support.processes import Service
from tests.support.simulator_client import SimulatorControl


def _data_lines(response: requests.Response) -> list[str]:
    return [
        line[len("data: ") :]
        for line in response.iter_lines(decode_unicode=True)
        if line.startswith("data: ")
    ]


@pytest.mark.parametrize("path", ["/api/v6/stream", "/api/stream"])
@pytest.mark.parametrize("field", ["signal", "message"])
def test_streams_the_generated_text(
    node: Service, simulator: SimulatorControl, path: str, field: str
) -> None:
    simulator.configure(stream_chunks=3)
    with requests.post(
        f"{node.url}{path}", json={field: "What is L104?"}, stream=True, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        pieces = _data_lines(response)
    assert len(pieces) == 3
    assert "".join(pieces) == "L104 simulator reply to: What is L104?"
    (seen,) = simulator.requests()
    assert seen["api_method"] == "streamGenerateContent"
    # The user's text is the whole prompt: nothing added.
    assert seen["body"] == {"contents": [{"role": "user", "parts": [{"text": "What is L104?"}]}]}


def test_upstream_failure_before_the_stream_is_an_error_status(
    node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("500")
    response = requests.post(f"{node.url}/api/stream", json={"signal": "x"}, timeout=10)
    assert response.status_code == 500
    assert response.json()["error"]["status"] == "INTERNAL"
