"""The simulator's OpenAI-compatible surface (`/v1beta/openai/`), over real HTTP."""

from __future__ import annotations

import base64
import itertools
import json
import re
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from app.simulator import SimulatorServer, start_in_thread
from app.simulator.responses import DEFAULT_MODELS
from tests.support.simulator_client import SimulatorControl

KEY = "sim-openai-key"
MODEL = "gemini-3.8-flash"
OTHER = "gemini-3.5-flash"
EMBED = "gemini-embedding-001"
AUTH = {"Authorization": f"Bearer {KEY}"}
REPLY = "L104 simulator reply to: Hello there"
HELLO = [{"role": "user", "content": "Hello there"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    """One simulator with an API key for the whole module."""
    sim = start_in_thread(api_key=KEY)
    yield sim
    sim.shutdown()


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorControl:
    """The module's simulator, reset before each test."""
    control = SimulatorControl(server.url, KEY)
    control.reset()
    return control


def post(sim: SimulatorControl, endpoint: str, body: Any, **kw: Any) -> requests.Response:
    kw.setdefault("headers", AUTH)
    kw.setdefault("timeout", 5)
    return requests.post(f"{sim.openai_base}/{endpoint}", json=body, **kw)


def chat(
    sim: SimulatorControl,
    model: str = MODEL,
    headers: dict[str, str] = AUTH,
    timeout: float = 5,
    **fields: Any,
) -> requests.Response:
    """POST chat/completions; `fields` go into the body (messages default to HELLO)."""
    fields.setdefault("messages", HELLO)
    body = {"model": model, **fields}
    return post(sim, "chat/completions", body, headers=headers, timeout=timeout)


def embeddings(
    sim: SimulatorControl, model: str = EMBED, timeout: float = 5, **fields: Any
) -> requests.Response:
    """POST embeddings; `fields` go into the body (input defaults to "Hello there")."""
    fields.setdefault("input", "Hello there")
    return post(sim, "embeddings", {"model": model, **fields}, timeout=timeout)


def get(sim: SimulatorControl, endpoint: str, **kw: Any) -> requests.Response:
    kw.setdefault("headers", AUTH)
    kw.setdefault("timeout", 5)
    return requests.get(f"{sim.openai_base}/{endpoint}", **kw)


def array_error(response: requests.Response) -> dict[str, Any]:
    """The native error inside the one-element JSON array this surface answers errors with."""
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    assert "retry-after" not in response.headers
    assert response.text.startswith('[{\n  "error": {\n    "code"')
    body = response.json()
    assert isinstance(body, list) and len(body) == 1 and list(body[0]) == ["error"]
    error: dict[str, Any] = body[0]["error"]
    assert error["code"] == response.status_code
    return error


def sse_events(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    assert text.endswith("\n\n") and "\r" not in text
    blocks = text.split("\n\n")[:-1]
    assert all(block.startswith("data: ") for block in blocks), blocks
    return [block.removeprefix("data: ") for block in blocks]


def stream_chunks(text: str) -> list[dict[str, Any]]:
    """The JSON chunks of a complete stream, which ends with `[DONE]`."""
    events = sse_events(text)
    assert events[-1] == "[DONE]" and "[DONE]" not in events[:-1]
    return [json.loads(event) for event in events[:-1]]


def native_embedding(sim: SimulatorControl, text: str, **extra: Any) -> list[float]:
    response = requests.post(
        f"{sim.api_base}/models/{EMBED}:embedContent",
        json={"content": {"parts": [{"text": text}]}, **extra},
        headers={"x-goog-api-key": KEY},
        timeout=5,
    )
    values: list[float] = response.json()["embedding"]["values"]
    return values


# --- models -------------------------------------------------------------------------------


def test_list_models(sim: SimulatorControl) -> None:
    response = get(sim, "models")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    assert response.json() == {
        "object": "list",
        "data": [
            {"id": f"models/{m}", "object": "model", "created": 0, "owned_by": "google"}
            for m in DEFAULT_MODELS
        ],
    }


@pytest.mark.parametrize("path_id", [MODEL, f"models/{MODEL}", f"models%2F{MODEL}"])
def test_get_model_with_or_without_prefix(sim: SimulatorControl, path_id: str) -> None:
    response = get(sim, f"models/{path_id}")
    assert response.status_code == 200
    assert response.json() == {
        "id": f"models/{MODEL}",
        "object": "model",
        "created": 0,
        "owned_by": "google",
    }
    assert sim.requests()[-1]["model"] == MODEL


def test_unknown_model_and_path(sim: SimulatorControl) -> None:
    missing = get(sim, "models/gemini-0-nope")
    assert missing.status_code == 404
    assert array_error(missing) == {
        "code": 404,
        "status": "NOT_FOUND",
        "message": "models/gemini-0-nope is not found for API version v1main, "
        "or is not supported for generateContent.",
    }
    assert array_error(chat(sim, model="gemini-0-nope"))["status"] == "NOT_FOUND"
    unknown = array_error(embeddings(sim, model="models/gemini-embedding-000"))
    assert unknown["message"].startswith("models/gemini-embedding-000 is not found")
    assert unknown["message"].endswith("or is not supported for embedContent.")
    assert array_error(get(sim, "responses"))["code"] == 404
    assert array_error(get(sim, "chat/completions"))["code"] == 405
    assert array_error(post(sim, "models", {}))["code"] == 405


# --- chat completions ---------------------------------------------------------------------


def test_chat_completion(sim: SimulatorControl) -> None:
    before = int(time.time())
    response = chat(sim, model=f"models/{MODEL}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    body = response.json()
    assert re.fullmatch(r"chatcmpl-[0-9a-f]+", body.pop("id"))
    assert before <= body.pop("created") <= int(time.time())
    assert body == {
        "object": "chat.completion",
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 6, "total_tokens": 8},
    }


def test_the_reply_answers_the_last_user_message(sim: SimulatorControl) -> None:
    messages = [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "second "}, {"type": "text", "text": "one"}],
        },
        {"role": "assistant", "content": None},
    ]
    body = chat(sim, messages=messages).json()
    assert body["choices"][0]["message"]["content"] == "L104 simulator reply to: second one"
    assert body["usage"]["prompt_tokens"] == 6  # every message's words


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
    ],
)
def test_json_response_format(sim: SimulatorControl, response_format: dict[str, Any]) -> None:
    content = chat(sim, response_format=response_format).json()["choices"][0]["message"]["content"]
    assert json.loads(content) == {"answer": REPLY}
    text = chat(sim, response_format={"type": "text"}).json()["choices"][0]["message"]["content"]
    assert text == REPLY


def test_tool_call_then_tool_result_turn(sim: SimulatorControl) -> None:
    body = chat(sim, tools=[WEATHER, TIME]).json()
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["role"] == "assistant" and message["content"] is None
    (tool_call,) = message["tool_calls"]
    assert re.fullmatch(r"call_[0-9a-f]+", tool_call["id"])
    assert tool_call["type"] == "function"
    assert tool_call["function"]["name"] == "get_weather"  # the first tool
    arguments = json.loads(tool_call["function"]["arguments"])
    assert arguments == {"city": "Hello there", "days": 1, "unit": "celsius"}
    assert body["usage"]["completion_tokens"] >= 1
    turn = [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": message["tool_calls"]},
        {"role": "tool", "tool_call_id": tool_call["id"], "content": '{"temp": 21}'},
    ]
    answer = chat(sim, messages=turn, tools=[WEATHER, TIME]).json()["choices"][0]
    assert answer["finish_reason"] == "stop"
    assert answer["message"] == {"role": "assistant", "content": REPLY}


def test_tool_choice(sim: SimulatorControl) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    body = chat(sim, tools=[WEATHER, TIME], tool_choice=named).json()
    function = body["choices"][0]["message"]["tool_calls"][0]["function"]
    assert function == {"name": "get_time", "arguments": "{}"}
    required = chat(sim, tools=[TIME], tool_choice="required").json()["choices"][0]
    assert required["finish_reason"] == "tool_calls"
    none = chat(sim, tools=[WEATHER], tool_choice="none").json()["choices"][0]
    assert none["finish_reason"] == "stop" and none["message"]["content"] == REPLY


# --- streaming ----------------------------------------------------------------------------


def test_stream_framing(sim: SimulatorControl) -> None:
    sim.configure(stream_chunks=3)
    with requests.post(
        f"{sim.openai_base}/chat/completions",
        json={"model": MODEL, "messages": HELLO, "stream": True},
        headers=AUTH,
        stream=True,
        timeout=5,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["transfer-encoding"] == "chunked"
        http_chunks = list(response.raw.read_chunked())
    assert http_chunks[-1] == b"data: [DONE]\n\n"
    assert all(chunk.count(b"\n\n") == 1 for chunk in http_chunks)  # one event per HTTP chunk
    chunks = stream_chunks(b"".join(http_chunks).decode())
    assert len(chunks) == 3
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {MODEL}
    assert len({c["created"] for c in chunks}) == 1
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant" and all("role" not in d for d in deltas[1:])
    assert "".join(d["content"] for d in deltas) == REPLY
    finishes = [c["choices"][0]["finish_reason"] for c in chunks]
    assert finishes == [None, None, "stop"]
    assert all("usage" not in c for c in chunks)


def test_stream_include_usage(sim: SimulatorControl) -> None:
    response = chat(sim, stream=True, stream_options={"include_usage": True})
    chunks = stream_chunks(response.text)
    assert len(chunks) == 5  # the default stream_chunks, then usage
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["id"] == chunks[0]["id"]
    assert usage["usage"] == {"prompt_tokens": 2, "completion_tokens": 6, "total_tokens": 8}
    plain = stream_chunks(chat(sim, stream=True, stream_options={"include_usage": False}).text)
    assert len(plain) == 4 and all(c["choices"] for c in plain)


def test_stream_stamp_chunks(sim: SimulatorControl) -> None:
    sim.configure(stream_chunks=3, chunk_delay_ms=50, stamp_chunks=1)
    before = time.time()
    chunks = stream_chunks(chat(sim, stream=True, stream_options={"include_usage": True}).text)
    after = time.time()
    stamps = [chunk["simSentAt"] for chunk in chunks]
    assert len(stamps) == 4 and before <= stamps[0] and stamps[-1] <= after
    # Each chunk is stamped after the 50 ms pause before it (less a margin for rounding).
    assert all(later - earlier >= 0.045 for earlier, later in itertools.pairwise(stamps))
    sim.configure(stamp_chunks=0)
    assert all("simSentAt" not in c for c in stream_chunks(chat(sim, stream=True).text))


def test_streamed_tool_call(sim: SimulatorControl) -> None:
    response = chat(sim, stream=True, tools=[WEATHER], stream_options={"include_usage": True})
    call_chunk, usage = stream_chunks(response.text)
    (choice,) = call_chunk["choices"]
    assert choice["finish_reason"] == "tool_calls"
    delta = choice["delta"]
    assert delta["role"] == "assistant" and delta["content"] is None
    (tool_call,) = delta["tool_calls"]
    assert tool_call["index"] == 0 and tool_call["type"] == "function"
    assert tool_call["id"].startswith("call_")
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"])["city"] == "Hello there"
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] > 0


def test_stream_cut(sim: SimulatorControl) -> None:
    sim.fault("stream_cut", model=MODEL, after=2, count=1)
    events: list[bytes] = []
    with (
        pytest.raises(requests.exceptions.ChunkedEncodingError),
        requests.post(
            f"{sim.openai_base}/chat/completions",
            json={"model": MODEL, "messages": HELLO, "stream": True},
            headers=AUTH,
            stream=True,
            timeout=5,
        ) as response,
    ):
        assert response.status_code == 200
        events.extend(line for line in response.iter_lines() if line)
    assert len(events) == 2 and b"[DONE]" not in events
    assert json.loads(events[-1].removeprefix(b"data: "))["choices"][0]["finish_reason"] is None
    sim.fault("stream_cut", model=MODEL, count=1)  # a call that does not stream is reset
    with pytest.raises(requests.ConnectionError):
        chat(sim)


def test_stream_malformed_and_slow_body(sim: SimulatorControl) -> None:
    sim.fault("malformed", model=MODEL, count=1)
    response = chat(sim, stream=True)
    assert response.status_code == 200
    (event,) = sse_events(response.text)  # one broken event, no [DONE]
    with pytest.raises(ValueError):
        json.loads(event)
    sim.fault("slow_body", model=MODEL, ms=300, count=1)
    with chat(sim, stream=True) as slow:
        assert int(slow.headers["content-length"]) > 0
        assert "".join(c["choices"][0]["delta"]["content"] for c in stream_chunks(slow.text)) == (
            REPLY
        )


# --- embeddings ---------------------------------------------------------------------------


def test_embeddings(sim: SimulatorControl) -> None:
    response = embeddings(sim, model=f"models/{EMBED}", input=["Hello there", "Bye now"])
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list" and body["model"] == EMBED
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert [(d["object"], d["index"]) for d in body["data"]] == [("embedding", 0), ("embedding", 1)]
    assert body["data"][0]["embedding"] == native_embedding(sim, "Hello there")
    assert body["data"][1]["embedding"] == native_embedding(sim, "Bye now")
    single = embeddings(sim, input="Hello there", encoding_format="float", dimensions=12).json()
    (only,) = single["data"]
    assert only["embedding"] == native_embedding(sim, "Hello there", outputDimensionality=12)


def test_base64_embeddings_decode_to_the_float_vector(sim: SimulatorControl) -> None:
    body = embeddings(sim, input=["Hello there"], encoding_format="base64").json()
    encoded = body["data"][0]["embedding"]
    assert isinstance(encoded, str)
    raw = base64.b64decode(encoded)
    assert len(raw) == 4 * 768
    assert list(struct.unpack("<768f", raw)) == native_embedding(sim, "Hello there")


# --- auth and bad input -------------------------------------------------------------------


def test_auth(sim: SimulatorControl) -> None:
    sim.fault("500")  # auth comes before faults
    missing = chat(sim, headers={})
    assert missing.status_code == 401
    error = array_error(missing)
    assert error["status"] == "UNAUTHENTICATED"
    assert error["details"][0]["reason"] == "CREDENTIALS_MISSING"
    native_key_only = chat(sim, headers={"x-goog-api-key": KEY})
    assert native_key_only.status_code == 401
    wrong = get(sim, "models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 400
    assert array_error(wrong) == {
        "code": 400,
        "status": "INVALID_ARGUMENT",
        "message": "API key not valid. Please pass a valid API key.",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        ],
    }
    assert chat(sim, headers={"Authorization": f"bearer {KEY}"}).status_code == 500
    log = sim.requests()
    assert [(e["auth"], e["api_key"]) for e in log] == [
        ("none", None),
        ("none", None),
        ("bearer", "nope"),
        ("bearer", KEY),
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"messages": HELLO}, "no model"),
        ({"model": "", "messages": HELLO}, "empty model"),
        ({"model": MODEL}, "no messages"),
        ({"model": MODEL, "messages": []}, "empty messages"),
        ({"model": MODEL, "messages": "Hello"}, "messages not a list"),
        ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, "unknown role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, "content not text"),
        ({"model": MODEL, "messages": [{"role": "user", "content": [{"text": "x"}]}]}, "no type"),
        ({"model": MODEL, "messages": HELLO, "stream": "yes"}, "stream not a bool"),
        ({"model": MODEL, "messages": HELLO, "stream_options": []}, "bad stream_options"),
        ({"model": MODEL, "messages": HELLO, "tools": {}}, "tools not a list"),
        ({"model": MODEL, "messages": HELLO, "tools": [{"type": "function"}]}, "nameless tool"),
        (
            {"model": MODEL, "messages": HELLO, "tools": [TIME], "tool_choice": "sometimes"},
            "bad tool_choice",
        ),
        (
            {
                "model": MODEL,
                "messages": HELLO,
                "tools": [TIME],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            },
            "tool_choice names a tool not given",
        ),
        ({"model": MODEL, "messages": HELLO, "response_format": {"type": "xml"}}, "bad format"),
        ({"model": EMBED, "messages": HELLO}, "chat on an embedding model"),
        ([{"model": MODEL}], "not an object"),
    ],
)
def test_bad_chat_requests(sim: SimulatorControl, body: Any, reason: str) -> None:
    response = post(sim, "chat/completions", body)
    assert response.status_code == 400, reason
    assert array_error(response)["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"input": ""}, "empty input"),
        ({"input": []}, "empty list"),
        ({"input": ["a", ""]}, "an empty string"),
        ({"input": [1, 2, 3]}, "tokens"),
        ({"input": None}, "no input"),
        ({"encoding_format": "hex"}, "bad encoding"),
        ({"dimensions": 0}, "too few dimensions"),
        ({"dimensions": 4000}, "too many dimensions"),
        ({"model": MODEL}, "embeddings on a chat model"),
    ],
)
def test_bad_embeddings_requests(sim: SimulatorControl, fields: Any, reason: str) -> None:
    response = embeddings(sim, **fields)
    assert response.status_code == 400, reason
    assert array_error(response)["status"] == "INVALID_ARGUMENT"


def test_bad_json_body(sim: SimulatorControl) -> None:
    for data in (b"{not json", b""):
        response = post(sim, "chat/completions", None, data=data)
        assert response.status_code == 400
        assert array_error(response)["message"].startswith("Invalid JSON payload received.")


# --- faults -------------------------------------------------------------------------------


@pytest.mark.parametrize("send", [chat, embeddings], ids=["chat", "embeddings"])
def test_429_in_the_array_has_retry_info(sim: SimulatorControl, send: Any) -> None:
    model = MODEL if send is chat else EMBED
    sim.fault("429", model=model, retry_delay="45.83s", count=1)
    response = send(sim, model=f"models/{model}")
    assert response.status_code == 429
    error = array_error(response)
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["message"].endswith("Please retry in 45.83s.")
    quota, retry = error["details"]
    assert quota["@type"] == "type.googleapis.com/google.rpc.QuotaFailure"
    (violation,) = quota["violations"]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    assert violation["quotaDimensions"] == {"location": "global", "model": model}
    assert retry == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "45.83s"}
    assert send(sim, model=model).status_code == 200


def test_429_variants(sim: SimulatorControl) -> None:
    sim.fault("429_day", model=MODEL, count=1)
    error = array_error(chat(sim))
    assert error["details"][0]["violations"][0]["quotaId"].startswith("GenerateRequestsPerDay")
    assert error["details"][1]["retryDelay"] == "3600s"
    sim.fault("429", model=MODEL, no_details=True, count=1)
    assert "details" not in array_error(chat(sim))


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("500", "INTERNAL", "An internal error has occurred."),
        ("503", "UNAVAILABLE", "The model is overloaded. Please try again later."),
        ("504", "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
    ],
)
def test_error_faults(sim: SimulatorControl, kind: str, status: str, message: str) -> None:
    sim.fault(kind, model=MODEL)
    response = chat(sim)
    assert response.status_code == int(kind)
    assert array_error(response) == {"code": int(kind), "status": status, "message": message}
    assert array_error(chat(sim, stream=True))["code"] == int(kind)  # before the stream starts
    assert chat(sim, model=OTHER).status_code == 200  # faults are per model
    assert embeddings(sim).status_code == 200


def test_reset_hang_latency_slow_body_and_malformed(sim: SimulatorControl) -> None:
    sim.fault("reset", model=MODEL, count=1)
    with pytest.raises(requests.ConnectionError):
        chat(sim)
    sim.fault("hang", model=MODEL, seconds=2, count=1)
    with pytest.raises(requests.ReadTimeout):
        chat(sim, timeout=0.3)
    sim.fault("latency", model=MODEL, ms=300, count=1)
    started = time.monotonic()
    assert chat(sim).json()["choices"][0]["message"]["content"] == REPLY
    assert time.monotonic() - started >= 0.3
    sim.fault("slow_body", model=MODEL, ms=300, count=1)
    with chat(sim) as response:
        assert int(response.headers["content-length"]) == len(response.content)
        assert response.json()["choices"][0]["message"]["content"] == REPLY
    sim.fault("malformed", model=MODEL, count=1)
    broken = chat(sim)
    assert broken.status_code == 200
    with pytest.raises(ValueError):
        broken.json()
    assert sim.stats()["faults_served"] == 5


def test_embeddings_connection_faults(sim: SimulatorControl) -> None:
    sim.fault("reset", model=EMBED, count=1)
    with pytest.raises(requests.ConnectionError):
        embeddings(sim)
    sim.fault("malformed", model=EMBED, count=1)
    with pytest.raises(ValueError):
        embeddings(sim).json()


def test_get_model_gets_only_the_native_get_model_faults(sim: SimulatorControl) -> None:
    sim.fault("500", model=MODEL)
    assert get(sim, f"models/{MODEL}").status_code == 200
    sim.fault("hang", model=MODEL, seconds=0.2, count=1)
    with pytest.raises(requests.ConnectionError):
        get(sim, f"models/{MODEL}")
    sim.fault("429")  # never on the list
    assert get(sim, "models").status_code == 200


# --- counters -----------------------------------------------------------------------------


def test_counters_per_model_and_method(sim: SimulatorControl) -> None:
    chat(sim, model=f"models/{MODEL}")
    chat(sim, model=OTHER, stream=True)
    embeddings(sim)
    get(sim, "models")
    get(sim, f"models/models/{MODEL}")
    stats = sim.stats()
    assert stats["by_model"] == {MODEL: 2, OTHER: 1, EMBED: 1}
    assert sim.by_method() == {
        "chat.completions": 2,
        "embeddings": 1,
        "openai.listModels": 1,
        "openai.getModel": 1,
    }
    first = sim.requests()[0]
    assert first["path"] == "/v1beta/openai/chat/completions" and first["method"] == "POST"
    assert first["body"] == {"model": f"models/{MODEL}", "messages": HELLO}
    assert (first["auth"], first["api_key"]) == ("bearer", KEY)


def wait_for(condition: Any, seconds: float = 5) -> bool:
    """Poll `condition()` until it holds or `seconds` pass; return whether it held."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_latency_config_and_in_flight() -> None:
    # Its own simulator: hangs left by other tests would change the in-flight count.
    server = start_in_thread(api_key=KEY)
    try:
        sim = SimulatorControl(server.url, KEY)
        sim.configure(latency_ms=1000)
        outcome: list[int] = []
        caller = threading.Thread(target=lambda: outcome.append(chat(sim).status_code))
        started = time.monotonic()
        caller.start()
        assert wait_for(lambda: sim.stats()["in_flight"] == 1)
        caller.join(5)
        assert outcome == [200] and time.monotonic() - started >= 1.0
        # The server counts the call ended just after its last byte is written.
        assert wait_for(lambda: sim.stats()["in_flight"] == 0)
        assert sim.stats()["peak_in_flight"] == 1
    finally:
        server.shutdown()
