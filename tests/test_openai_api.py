"""The official `openai` SDK, changed only in `base_url` and `api_key`, as a client of the
node's OpenAI-compatible API (real gunicorn, the real simulator behind it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests

from tests.conftest import UPSTREAM_KEY, running_node
from tests.support.admin import heal
from tests.support.logs import events
from tests.support.processes import Service
from tests.support.simulator_client import SimulatorControl

CLIENT_KEY = "openai-client-s3cr3t-0123456789"
ADMIN_TOKEN = "admin-s3cr3t-openai-0123456789"
FIRST, SECOND, THIRD = "gemini-3.8-flash", "gemini-3.5-flash", "gemini-2.5-flash-lite"
EMBEDDING = "gemini-embedding-001"
REPLY = "L104 simulator reply to: "
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture(scope="module")
def openai_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """A node that requires a client key and has an admin token (to heal between tests)."""
    with running_node(
        simulator_service,
        logs_dir,
        "openai-node",
        NODE_API_KEYS=CLIENT_KEY,
        ADMIN_TOKEN=ADMIN_TOKEN,
        CIRCUIT_BREAKER_THRESHOLD="3",
        MAX_RETRY_ATTEMPTS="1",
    ) as service:
        yield service


@pytest.fixture
def node(openai_node: Service) -> Iterator[Service]:
    """The node, with breakers, cooldowns and error trackers cleared after each test."""
    yield openai_node
    heal(openai_node, ADMIN_TOKEN, reset_circuit_breaker="true", clear_cooldowns="true")


def _client(node: Service, base: str = "/v1beta/openai/", **options: object) -> openai.OpenAI:
    return openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{node.url}{base}", **options)  # type: ignore[arg-type]


def _requests_to_node(node: Service) -> int:
    view = requests.get(f"{node.url}/metrics", params={"format": "json"}, timeout=5).json()
    return int(view["requests"].get("openai", 0))


@pytest.mark.parametrize("base", ["/v1beta/openai/", "/openai/v1/"])
def test_chat_completion(node: Service, simulator: SimulatorControl, base: str) -> None:
    client = _client(node, base)
    answer = client.chat.completions.create(
        model=FIRST,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello from openai"},
        ],
        temperature=0.3,
    )
    assert answer.choices[0].message.content == REPLY + "Hello from openai"
    assert answer.model == FIRST
    assert answer.usage is not None and answer.usage.total_tokens > 0
    (seen,) = simulator.requests()
    assert seen["path"] == "/v1beta/openai/chat/completions"
    # The node's key went upstream as a bearer token; the client's never did.
    assert seen["auth"] == "bearer" and seen["api_key"] == UPSTREAM_KEY
    assert seen["body"]["temperature"] == 0.3  # passed through untouched
    assert seen["body"]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_stream_arrives_in_chunks_and_ends_with_usage(
    node: Service, simulator: SimulatorControl
) -> None:
    simulator.configure(stream_chunks=4)
    stream = _client(node).chat.completions.create(
        model=FIRST,
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    texts = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([t for t in texts if t]) == 4
    assert "".join(texts) == REPLY + "stream please"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert {c.model for c in chunks} == {FIRST}


def test_stream_framing_ends_with_done(node: Service, simulator: SimulatorControl) -> None:
    body = {"model": FIRST, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with requests.post(
        f"{node.url}/v1beta/openai/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        stream=True,
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["X-L104-Model"] == FIRST
        raw = response.content
    events_seen = [e for e in raw.split(b"\n\n") if e]
    assert events_seen[-1] == b"data: [DONE]"
    assert all(e.startswith(b"data: ") for e in events_seen)
    assert raw.count(b"[DONE]") == 1


def test_tool_call_and_tool_result(node: Service, simulator: SimulatorControl) -> None:
    client = _client(node)
    messages: list[dict[str, object]] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model=FIRST, messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    json.loads(call.function.arguments)  # type: ignore[union-attr]
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = client.chat.completions.create(model=FIRST, messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content
    assert simulator.requests()[-1]["body"]["tools"] == TOOLS


def test_response_format_is_passed_through(node: Service, simulator: SimulatorControl) -> None:
    answer = _client(node).chat.completions.create(
        model=FIRST,
        messages=[{"role": "user", "content": "as json"}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)
    assert simulator.requests()[-1]["body"]["response_format"] == {"type": "json_object"}


def test_embeddings(node: Service, simulator: SimulatorControl) -> None:
    """The SDK asks for base64 by default and decodes it; the vectors are the model's own."""
    result = _client(node).embeddings.create(model=EMBEDDING, input=["one", "two"])
    assert [d.index for d in result.data] == [0, 1]
    vectors = [d.embedding for d in result.data]
    assert all(len(v) == 768 for v in vectors) and vectors[0] != vectors[1]
    floats = _client(node).embeddings.create(model=EMBEDDING, input="one", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)
    assert simulator.stats()["by_model"] == {EMBEDDING: 2}


def test_models(node: Service, simulator: SimulatorControl) -> None:
    client = _client(node)
    ids = [m.id for m in client.models.list()]
    assert f"models/{FIRST}" in ids and f"models/{EMBEDDING}" in ids
    assert client.models.retrieve(FIRST).id == f"models/{FIRST}"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gemini-not-served")


def test_429_storm_on_the_first_model_is_answered_by_the_second(
    node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("429", model=FIRST, retry_delay="30s")
    client = _client(node)  # the SDK's own retries left on (max_retries=2)
    for number in range(10):
        raw = client.chat.completions.with_raw_response.create(
            model=FIRST, messages=[{"role": "user", "content": f"storm {number}"}]
        )
        answer = raw.parse()
        assert answer.model == SECOND
        assert raw.headers["X-L104-Model"] == SECOND
        assert answer.choices[0].message.content == REPLY + f"storm {number}"
    by_model = simulator.stats()["by_model"]
    assert by_model[SECOND] == 10
    assert by_model[FIRST] <= 2  # once per worker: then it rests for RetryInfo's 30 s
    rotations = [e for e in events(node, "model_rotation") if e.get("api") == "openai"]
    assert rotations and rotations[-1]["to_model"] == SECOND


def test_stream_is_rotated_before_its_first_byte(
    node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("503", model=FIRST)
    stream = _client(node).chat.completions.create(
        model=FIRST, messages=[{"role": "user", "content": "rotate me"}], stream=True
    )
    chunks = list(stream)
    assert {c.model for c in chunks} == {SECOND}
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY + "rotate me"


def test_failure_mid_stream_ends_with_an_error_event_then_done(
    node: Service, simulator: SimulatorControl
) -> None:
    simulator.configure(stream_chunks=4)
    simulator.fault("stream_cut", model=FIRST, after=1)
    body = {"model": FIRST, "messages": [{"role": "user", "content": "cut"}], "stream": True}
    raw = requests.post(
        f"{node.url}/v1beta/openai/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout=10,
    ).content
    frames = [e for e in raw.split(b"\n\n") if e]
    assert json.loads(frames[0].removeprefix(b"data: "))["object"] == "chat.completion.chunk"
    error = json.loads(frames[-2].removeprefix(b"data: "))["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert frames[-1] == b"data: [DONE]"
    simulator.fault("stream_cut", model=FIRST, after=1)
    stream = _client(node).chat.completions.create(
        model=FIRST, messages=[{"role": "user", "content": "cut"}], stream=True
    )
    with pytest.raises(openai.APIError):  # the SDK raises on the error event
        list(stream)


def test_every_model_rate_limited_is_a_rate_limit_error_without_sdk_retries(
    node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("429", retry_delay="40s")
    before = _requests_to_node(node)
    with pytest.raises(openai.RateLimitError) as caught:
        _client(node).chat.completions.create(
            model=FIRST, messages=[{"role": "user", "content": "x"}]
        )
    assert _requests_to_node(node) - before == 1  # x-should-retry: false, no SDK retries
    headers = caught.value.response.headers
    assert headers["x-should-retry"] == "false"
    assert 30 <= int(headers["Retry-After"]) <= 40
    assert caught.value.code == "rate_limit_exceeded"


def test_every_model_down_is_an_internal_server_error_without_sdk_retries(
    node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("503")
    client = _client(node)
    for _ in range(3):  # CIRCUIT_BREAKER_THRESHOLD=3: every breaker opens
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=FIRST, messages=[{"role": "user", "content": "x"}])
    calls = simulator.calls()
    before = _requests_to_node(node)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=FIRST, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503
    assert simulator.calls() == calls  # the open breakers answered: nothing went upstream
    assert _requests_to_node(node) - before == 1
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_embeddings_never_rotate(node: Service, simulator: SimulatorControl) -> None:
    simulator.fault("429", model=EMBEDDING, retry_delay="20s")
    client = _client(node, max_retries=0)
    for _ in range(3):
        with pytest.raises(openai.RateLimitError):
            client.embeddings.create(model=EMBEDDING, input="x")
    assert simulator.stats()["by_model"] == {EMBEDDING: 1}  # then it rested; no other model


def test_client_key_is_checked_and_never_forwarded(
    node: Service, simulator: SimulatorControl
) -> None:
    wrong = openai.OpenAI(api_key="wrong-key", base_url=f"{node.url}/v1beta/openai/")
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model=FIRST, messages=[{"role": "user", "content": "x"}])
    missing = requests.post(
        f"{node.url}/v1beta/openai/chat/completions", json={"model": FIRST}, timeout=5
    )
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    assert simulator.calls() == 0


def test_metrics_carry_the_api(node: Service, simulator: SimulatorControl) -> None:
    _client(node).chat.completions.create(model=FIRST, messages=[{"role": "user", "content": "m"}])
    text = requests.get(f"{node.url}/metrics", timeout=5).text
    assert 'l104_requests_total{api="openai",code="200",endpoint="chat.completions"}' in text
    assert f'l104_upstream_calls_total{{api="openai",model="{FIRST}",outcome="ok"}}' in text
    path = "/v1beta/openai/chat/completions"
    access = [e for e in events(node, "access") if e.get("path") == path]
    assert access and access[-1]["api"] == "openai"
