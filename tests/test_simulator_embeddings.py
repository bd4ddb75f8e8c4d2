"""The simulator's native embeddings (embedContent, batchEmbedContents), over real HTTP."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from google import genai
from google.genai import types

from app.simulator import SimulatorServer, start_in_thread
from app.simulator.responses import DEFAULT_MODELS
from tests.support.simulator_client import SimulatorControl

KEY = "sim-embed-key"
EMBED = "gemini-embedding-001"
OTHER_EMBED = "gemini-embedding-exp"  # a second embedding space, served only here
CHAT = "gemini-3.8-flash"
CONTENT = {"content": {"parts": [{"text": "Hello there"}]}}


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    """One simulator (default models plus a second embedding model) for the module."""
    sim = start_in_thread(api_key=KEY, models=[*DEFAULT_MODELS, OTHER_EMBED])
    yield sim
    sim.shutdown()


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorControl:
    """The module's simulator, reset before each test."""
    control = SimulatorControl(server.url, KEY)
    control.reset()
    return control


def call(
    sim: SimulatorControl,
    method: str,
    body: Any = CONTENT,
    model: str = EMBED,
    ver: str = "v1beta",
    **kw: Any,
) -> requests.Response:
    kw.setdefault("headers", {"x-goog-api-key": KEY})
    kw.setdefault("timeout", 5)
    return requests.post(f"{sim.url}/{ver}/models/{model}:{method}", json=body, **kw)


def embed(sim: SimulatorControl, text: str, model: str = EMBED, **extra: Any) -> list[float]:
    body = {"content": {"parts": [{"text": text}]}, **extra}
    response = call(sim, "embedContent", body, model)
    assert response.status_code == 200, response.text
    values: list[float] = response.json()["embedding"]["values"]
    return values


def batch(texts: list[str], model: str = EMBED, **extra: Any) -> dict[str, Any]:
    return {
        "requests": [
            {"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **extra}
            for t in texts
        ]
    }


def error_of(response: requests.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    assert response.text.startswith('{\n  "error": {\n    "code"')
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == response.status_code
    return error


def norm(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values))


# --- models -------------------------------------------------------------------------------


def test_the_embedding_model_is_served_with_its_methods(sim: SimulatorControl) -> None:
    assert DEFAULT_MODELS[-1] == EMBED
    page = requests.get(f"{sim.api_base}/models", params={"key": KEY}, timeout=5).json()
    methods = {m["name"]: m["supportedGenerationMethods"] for m in page["models"]}
    assert methods[f"models/{EMBED}"] == ["embedContent", "batchEmbedContents"]
    assert methods[f"models/{CHAT}"] == ["generateContent", "countTokens"]
    model = requests.get(f"{sim.api_base}/models/{EMBED}", params={"key": KEY}, timeout=5).json()
    assert model["displayName"] == "Gemini Embedding 001"


# --- embedContent -------------------------------------------------------------------------


@pytest.mark.parametrize("ver", ["v1", "v1beta"])
def test_embed_content(sim: SimulatorControl, ver: str) -> None:
    response = call(sim, "embedContent", {**CONTENT, "taskType": "RETRIEVAL_QUERY"}, ver=ver)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    body = response.json()
    assert list(body) == ["embedding"] and list(body["embedding"]) == ["values"]
    values = body["embedding"]["values"]
    assert len(values) == 768 and all(isinstance(v, float) for v in values)
    assert norm(values) == pytest.approx(1.0, abs=1e-6)


def test_vectors_are_deterministic_and_differ_by_text_and_model(sim: SimulatorControl) -> None:
    first = embed(sim, "Hello there")
    assert embed(sim, "Hello there") == first
    # The text of every part counts, and the task type does not change the vector.
    parts = {"content": {"parts": [{"text": "Hello "}, {"text": "there"}]}}
    assert call(sim, "embedContent", parts).json()["embedding"]["values"] == first
    assert embed(sim, "Hello there", taskType="CLUSTERING") == first
    assert embed(sim, "Hello") != first
    other = embed(sim, "Hello there", model=OTHER_EMBED)
    assert other != first and norm(other) == pytest.approx(1.0, abs=1e-6)
    # Two spaces, not one vector shuffled: the cosine is near zero.
    assert abs(sum(a * b for a, b in zip(first, other, strict=True))) < 0.2


def test_output_dimensionality(sim: SimulatorControl) -> None:
    full = embed(sim, "Hello there")
    short = embed(sim, "Hello there", outputDimensionality=8)
    assert len(short) == 8 and norm(short) == pytest.approx(1.0, abs=1e-6)
    # Matryoshka-like: the short vector points where the start of the long one does.
    head = full[:8]
    assert short == pytest.approx([v / norm(head) for v in head], rel=1e-5, abs=1e-6)
    assert len(embed(sim, "x", output_dimensionality=3072)) == 3072  # snake_case accepted
    assert len(embed(sim, "x", outputDimensionality=1)) == 1
    for bad in (0, 3073, "8", True, 2.5):
        response = call(sim, "embedContent", {**CONTENT, "outputDimensionality": bad})
        assert response.status_code == 400, bad
        assert "outputDimensionality" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "no content"),
        ({"content": "Hello"}, "content not an object"),
        ({"content": {"parts": []}}, "no parts"),
        ({"content": {"parts": [{"inlineData": {}}]}}, "not a text part"),
        ({"content": {"parts": [{"text": ""}]}}, "empty text"),
        ({**CONTENT, "taskType": "NOT_A_TASK"}, "unknown task type"),
        ([CONTENT], "not an object"),
        (None, "empty body"),
    ],
)
def test_bad_embed_content_requests(sim: SimulatorControl, body: Any, reason: str) -> None:
    response = call(sim, "embedContent", body)
    assert response.status_code == 400, reason
    assert error_of(response)["status"] == "INVALID_ARGUMENT"


def test_embed_methods_on_a_chat_model_are_not_found(sim: SimulatorControl) -> None:
    for method in ("embedContent", "batchEmbedContents"):
        response = call(sim, method, batch(["x"], CHAT), model=CHAT)
        assert response.status_code == 404
        assert error_of(response) == {
            "code": 404,
            "status": "NOT_FOUND",
            "message": f"models/{CHAT} is not found for API version v1beta, "
            f"or is not supported for {method}.",
        }
    unknown = call(sim, "embedContent", model="gemini-embedding-000", ver="v1")
    assert unknown.status_code == 404 and "API version v1," in error_of(unknown)["message"]


@pytest.mark.parametrize("method", ["generateContent", "streamGenerateContent", "countTokens"])
def test_generation_methods_on_the_embedding_model_are_refused(
    sim: SimulatorControl, method: str
) -> None:
    prompt = {"contents": [{"parts": [{"text": "Hi"}]}]}
    response = call(sim, method, prompt)
    assert response.status_code == 400
    assert error_of(response) == {
        "code": 400,
        "status": "INVALID_ARGUMENT",
        "message": f"models/{EMBED} is not supported for {method}.",
    }


# --- batchEmbedContents -------------------------------------------------------------------


def test_batch_embed_contents(sim: SimulatorControl) -> None:
    body = batch(["one", "two"])
    body["requests"].append(
        {
            "model": f"models/{EMBED}",
            "content": {"role": "user", "parts": [{"text": "three"}]},
            "outputDimensionality": 16,
        }
    )
    response = call(sim, "batchEmbedContents", body)
    assert response.status_code == 200
    embeddings = response.json()["embeddings"]
    assert [list(e) for e in embeddings] == [["values"]] * 3
    assert [len(e["values"]) for e in embeddings] == [768, 768, 16]
    assert embeddings[0]["values"] == embed(sim, "one")
    assert embeddings[1]["values"] == embed(sim, "two")
    assert embeddings[2]["values"] == embed(sim, "three", outputDimensionality=16)


def test_batch_requests_must_name_the_model_of_the_url(sim: SimulatorControl) -> None:
    body = batch(["one", "two"])
    body["requests"][1]["model"] = f"models/{OTHER_EMBED}"
    response = call(sim, "batchEmbedContents", body)
    assert response.status_code == 400
    message = error_of(response)["message"]
    assert "requests[1]" in message
    assert f"models/{OTHER_EMBED}" in message and f"models/{EMBED}" in message
    body["requests"][1]["model"] = EMBED  # without models/
    assert call(sim, "batchEmbedContents", body).status_code == 400
    del body["requests"][1]["model"]
    assert call(sim, "batchEmbedContents", body).status_code == 400


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "no requests"),
        ({"requests": []}, "empty requests"),
        ({"requests": "x"}, "requests not a list"),
        ({"requests": ["x"]}, "a request not an object"),
        ({"requests": [{"model": f"models/{EMBED}"}]}, "no content"),
        (batch(["x"] * 101), "over 100 requests"),
        (batch(["x"], outputDimensionality=0), "bad dimensionality"),
    ],
)
def test_bad_batch_requests(sim: SimulatorControl, body: Any, reason: str) -> None:
    response = call(sim, "batchEmbedContents", body)
    assert response.status_code == 400, reason
    assert error_of(response)["status"] == "INVALID_ARGUMENT"


def test_google_genai_sdk_embeds_through_batch_embed_contents(sim: SimulatorControl) -> None:
    options = types.HttpOptions(base_url=sim.url, api_version="v1beta")
    client = genai.Client(api_key=KEY, http_options=options)
    result = client.models.embed_content(
        model=EMBED,
        contents=["one", "two"],
        config=types.EmbedContentConfig(output_dimensionality=32, task_type="RETRIEVAL_DOCUMENT"),
    )
    assert result.embeddings is not None
    vectors = [e.values for e in result.embeddings]
    assert vectors == [embed(sim, t, outputDimensionality=32) for t in ("one", "two")]
    assert sim.requests()[0]["api_method"] == "batchEmbedContents"


# --- auth, faults, counters ---------------------------------------------------------------


def test_auth_applies_before_faults(sim: SimulatorControl) -> None:
    sim.fault("500")
    assert call(sim, "embedContent", headers={}).status_code == 403
    wrong = call(sim, "batchEmbedContents", batch(["x"]), headers={"x-goog-api-key": "nope"})
    assert error_of(wrong)["details"][0]["reason"] == "API_KEY_INVALID"
    assert call(sim, "embedContent").status_code == 500


METHODS = [("embedContent", CONTENT), ("batchEmbedContents", batch(["Hello there"]))]


@pytest.mark.parametrize(("method", "body"), METHODS)
def test_429_faults(sim: SimulatorControl, method: str, body: Any) -> None:
    sim.fault("429", model=EMBED, retry_delay="12.5s", count=1)
    error = error_of(call(sim, method, body))
    assert error["status"] == "RESOURCE_EXHAUSTED"
    quota, retry = error["details"]
    assert quota["violations"][0]["quotaDimensions"] == {"location": "global", "model": EMBED}
    assert retry == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"}
    sim.fault("429_day", model=EMBED, count=1)
    error = error_of(call(sim, method, body))
    assert "PerDay" in error["details"][0]["violations"][0]["quotaId"]
    assert call(sim, method, body).status_code == 200


@pytest.mark.parametrize(("method", "body"), METHODS)
@pytest.mark.parametrize(
    ("kind", "status"), [("500", "INTERNAL"), ("503", "UNAVAILABLE"), ("504", "DEADLINE_EXCEEDED")]
)
def test_error_faults(
    sim: SimulatorControl, method: str, body: Any, kind: str, status: str
) -> None:
    sim.fault(kind, model=EMBED, count=1)
    response = call(sim, method, body)
    assert response.status_code == int(kind) and error_of(response)["status"] == status
    assert call(sim, method, body).status_code == 200


@pytest.mark.parametrize(("method", "body"), METHODS)
def test_connection_faults(sim: SimulatorControl, method: str, body: Any) -> None:
    for kind in ("reset", "stream_cut"):  # stream_cut resets a call that does not stream
        sim.fault(kind, model=EMBED, count=1)
        with pytest.raises(requests.ConnectionError):
            call(sim, method, body)
    sim.fault("hang", model=EMBED, seconds=2, count=1)
    with pytest.raises(requests.ReadTimeout):
        call(sim, method, body, timeout=0.3)
    # Other models are served while the hang lasts.
    assert call(sim, "embedContent", model=OTHER_EMBED).status_code == 200


@pytest.mark.parametrize(("method", "body"), METHODS)
def test_latency_slow_body_and_malformed(sim: SimulatorControl, method: str, body: Any) -> None:
    sim.fault("latency", model=EMBED, ms=300, count=1)
    started = time.monotonic()
    assert call(sim, method, body).status_code == 200
    assert time.monotonic() - started >= 0.3
    sim.fault("slow_body", model=EMBED, ms=300, count=1)
    with call(sim, method, body, stream=True) as response:  # returns once the headers are in
        length = int(response.headers["content-length"])
        data = response.content
    assert len(data) == length and json.loads(data)
    sim.fault("malformed", model=EMBED, count=1)
    response = call(sim, method, body)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    assert sim.stats()["faults_served"] == 3


def test_config_latency_applies(sim: SimulatorControl) -> None:
    sim.configure(latency_ms=200)
    started = time.monotonic()
    assert call(sim, "embedContent").status_code == 200
    assert time.monotonic() - started >= 0.2


def test_counters_per_model_and_method(sim: SimulatorControl) -> None:
    call(sim, "embedContent")
    call(sim, "embedContent", model=OTHER_EMBED)
    call(sim, "batchEmbedContents", batch(["a", "b"]))
    call(sim, "embedContent", model=CHAT)  # refused, still counted
    stats = sim.stats()
    assert stats["by_model"] == {EMBED: 2, OTHER_EMBED: 1, CHAT: 1}
    assert stats["by_method"] == {"embedContent": 3, "batchEmbedContents": 1}
    entry = sim.requests()[2]
    assert entry["path"] == f"/v1beta/models/{EMBED}:batchEmbedContents"
    assert (entry["auth"], entry["api_key"]) == ("header", KEY)
    assert entry["body"] == batch(["a", "b"])
