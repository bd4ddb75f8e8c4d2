"""The official google-genai SDK as a client of the node (through real gunicorn)."""

from __future__ import annotations

import time

import pytest
from google import genai
from google.genai import types

from tests.support.processes import Service
from tests.support.simulator_client import SimulatorControl

MODEL = "gemini-3.8-flash"


def _client(node: Service, api_version: str | None) -> genai.Client:
    options = types.HttpOptions(base_url=node.url, api_version=api_version)
    return genai.Client(api_key="any-client-key", http_options=options)


VERSIONS = [pytest.param("v1beta", id="v1beta"), pytest.param(None, id="sdk-default-v1")]


@pytest.mark.parametrize("api_version", VERSIONS)
def test_generate_content(
    node: Service, simulator: SimulatorControl, api_version: str | None
) -> None:
    client = _client(node, api_version)
    response = client.models.generate_content(model=MODEL, contents="Hello from the SDK")
    assert response.text == "L104 simulator reply to: Hello from the SDK"
    assert response.model_version == MODEL
    (seen,) = simulator.requests()
    assert seen["api_key"] != "any-client-key"


@pytest.mark.parametrize("api_version", VERSIONS)
def test_generate_content_stream_arrives_incrementally(
    node: Service, simulator: SimulatorControl, api_version: str | None
) -> None:
    simulator.configure(stream_chunks=4, chunk_delay_ms=250)
    started = time.monotonic()
    arrivals: list[float] = []
    texts: list[str] = []
    client = _client(node, api_version)
    for chunk in client.models.generate_content_stream(model=MODEL, contents="stream please"):
        arrivals.append(time.monotonic() - started)
        texts.append(chunk.text or "")
    assert len(texts) == 4
    assert "".join(texts) == "L104 simulator reply to: stream please"
    # Chunks came one by one, not all at the end.
    assert arrivals[-1] - arrivals[0] >= 0.5


@pytest.mark.parametrize("api_version", VERSIONS)
def test_count_tokens(node: Service, simulator: SimulatorControl, api_version: str | None) -> None:
    client = _client(node, api_version)
    result = client.models.count_tokens(model=MODEL, contents="one two three")
    assert result.total_tokens == 3


@pytest.mark.parametrize("api_version", VERSIONS)
def test_list_models(node: Service, simulator: SimulatorControl, api_version: str | None) -> None:
    client = _client(node, api_version)
    names = [m.name for m in client.models.list()]
    assert f"models/{MODEL}" in names


def test_sdk_sees_gemini_errors(node: Service, simulator: SimulatorControl) -> None:
    client = _client(node, "v1beta")
    with pytest.raises(genai.errors.ClientError) as caught:
        client.models.generate_content(model="gemini-unknown", contents="x")
    assert caught.value.code == 400
