"""Native embeddings through the node: google-genai's embed_content, embedContent, and the
healing that applies to them (retries, cooldowns, breakers) without model rotation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from google import genai
from google.genai import types

from tests.conftest import UPSTREAM_KEY, running_node
from tests.support.admin import heal, status
from tests.support.processes import Service
from tests.support.simulator_client import SimulatorControl

EMBEDDING = "gemini-embedding-001"
ADMIN_TOKEN = "admin-s3cr3t-embeddings-0123456789"
EMBED = f"/v1beta/models/{EMBEDDING}:embedContent"
BATCH = f"/v1beta/models/{EMBEDDING}:batchEmbedContents"


def _content(text: str) -> dict[str, object]:
    return {"parts": [{"text": text}]}


def _genai(node: Service, api_version: str | None) -> genai.Client:
    options = types.HttpOptions(base_url=node.url, api_version=api_version)
    return genai.Client(api_key="any-client-key", http_options=options)


@pytest.mark.parametrize("api_version", ["v1beta", None])
def test_genai_embed_content_through_the_node(
    node: Service, simulator: SimulatorControl, api_version: str | None
) -> None:
    client = _genai(node, api_version)  # kept: a collected client closes its connections
    result = client.models.embed_content(model=EMBEDDING, contents=["first text", "second text"])
    assert result.embeddings is not None
    vectors = [e.values for e in result.embeddings]
    assert len(vectors) == 2 and all(v is not None and len(v) == 768 for v in vectors)
    (seen,) = simulator.requests()
    assert seen["api_method"] == "batchEmbedContents" and seen["model"] == EMBEDDING
    assert seen["api_key"] == UPSTREAM_KEY
    # The node passed the vectors through: the simulator's own answer for the same text.
    direct = requests.post(
        f"{simulator.api_base}/models/{EMBEDDING}:embedContent",
        json={"content": _content("first text")},
        headers={"x-goog-api-key": UPSTREAM_KEY},
        timeout=5,
    ).json()["embedding"]["values"]
    assert vectors[0] == pytest.approx(direct)


def test_embed_content_and_dimensionality(node: Service, simulator: SimulatorControl) -> None:
    body = {"content": _content("x"), "taskType": "RETRIEVAL_QUERY", "outputDimensionality": 64}
    response = requests.post(f"{node.url}{EMBED}", json=body, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["X-L104-Model"] == EMBEDDING
    assert len(response.json()["embedding"]["values"]) == 64
    assert simulator.requests()[-1]["body"] == body  # forwarded untouched


def test_embedding_models_are_listed_and_described(
    node: Service, simulator: SimulatorControl
) -> None:
    client = _genai(node, "v1beta")
    names = [m.name for m in client.models.list()]
    assert f"models/{EMBEDDING}" in names
    model = requests.get(f"{node.url}/v1beta/models/{EMBEDDING}", timeout=5).json()
    assert "embedContent" in model["supportedGenerationMethods"]


@pytest.fixture(scope="module")
def embedding_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """A node whose breakers open after 2 failures, healed between tests."""
    with running_node(
        simulator_service,
        logs_dir,
        "embedding-node",
        ADMIN_TOKEN=ADMIN_TOKEN,
        CIRCUIT_BREAKER_THRESHOLD="2",
        MAX_RETRY_ATTEMPTS="2",
    ) as service:
        yield service


@pytest.fixture
def healed_node(embedding_node: Service) -> Iterator[Service]:
    yield embedding_node
    heal(embedding_node, ADMIN_TOKEN, reset_circuit_breaker="true", clear_cooldowns="true")


def test_a_rate_limited_embedding_model_rests_and_never_rotates(
    healed_node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("429", model=EMBEDDING, retry_delay="20s")
    answers = [
        requests.post(f"{healed_node.url}{EMBED}", json={"content": _content("q")}, timeout=5)
        for _ in range(5)
    ]
    assert [a.status_code for a in answers] == [429] * 5
    for answer in answers:
        assert answer.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
        assert 1 <= int(answer.headers["Retry-After"]) <= 20
        details = answer.json()["error"]["details"]
        assert any(d.get("@type", "").endswith("RetryInfo") for d in details)
    # Only the embedding model was ever called, and at most once per worker: then it rested.
    by_model = simulator.stats()["by_model"]
    assert set(by_model) == {EMBEDDING} and by_model[EMBEDDING] <= 2


def test_embeddings_are_retried_then_the_breaker_fails_fast(
    healed_node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("503", model=EMBEDDING, count=1)  # one 503: the node's retry answers
    ok = requests.post(
        f"{healed_node.url}{BATCH}",
        json={"requests": [{"model": f"models/{EMBEDDING}", "content": _content("a")}]},
        timeout=5,
    )
    assert ok.status_code == 200, ok.text
    assert simulator.stats()["by_model"] == {EMBEDDING: 2}
    simulator.fault("503", model=EMBEDDING)
    codes = [
        requests.post(f"{healed_node.url}{EMBED}", json={"content": _content("b")}, timeout=10)
        for _ in range(4)
    ]
    assert [c.status_code for c in codes] == [503] * 4
    calls = simulator.stats()["by_model"]
    assert set(calls) == {EMBEDDING}
    # The breaker opened after 2 failed calls (3 attempts each); the rest failed fast.
    assert calls[EMBEDDING] == 2 + 2 * 3
    assert "Retry-After" in codes[-1].headers
    assert status(healed_node, ADMIN_TOKEN)["models"][EMBEDDING]["circuit_state"] == "open"
    ready = requests.get(f"{healed_node.url}/ready", timeout=5)
    assert ready.status_code == 200  # generation models still answer
