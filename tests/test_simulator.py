"""The bundled Gemini simulator, exercised over real HTTP (in-process and as a CLI)."""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from app.simulator import SimulatorServer, start_in_thread
from app.simulator.responses import DEFAULT_MODELS

KEY = "sim-test-key"
MODEL = "gemini-3.8-flash"
ROOT = Path(__file__).resolve().parents[1]
PROMPT = {"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]}
REPLY = "L104 simulator reply to: Hello there"


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    """One simulator with an API key for the whole module."""
    sim = start_in_thread(api_key=KEY)
    yield sim
    sim.shutdown()


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorServer:
    """The module's simulator, reset before each test."""
    requests.post(f"{server.url}/_sim/reset", timeout=5).raise_for_status()
    return server


def api(sim: SimulatorServer, method: str, model: str = MODEL, ver: str = "v1beta") -> str:
    return f"{sim.url}/{ver}/models/{model}:{method}"


def generate(sim: SimulatorServer, model: str = MODEL, **kw: Any) -> requests.Response:
    kw.setdefault("json", PROMPT)
    kw.setdefault("headers", {"x-goog-api-key": KEY})
    kw.setdefault("timeout", 5)
    return requests.post(api(sim, "generateContent", model), **kw)


def fault(sim: SimulatorServer, kind: str, model: str = "*", **params: Any) -> dict[str, Any]:
    body = {"model": model, "fault": kind, **params}
    response = requests.post(f"{sim.url}/_sim/faults", json=body, timeout=5)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def configure(sim: SimulatorServer, **config: Any) -> None:
    requests.post(f"{sim.url}/_sim/config", json=config, timeout=5).raise_for_status()


def error_of(response: requests.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    assert "retry-after" not in response.headers
    assert response.text.startswith('{\n  "error": {\n    "code"')  # 2-space indented
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == response.status_code
    return error


def raw_exchange(sim: SimulatorServer, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


# --- the Gemini API -----------------------------------------------------------------------


@pytest.mark.parametrize("ver", ["v1", "v1beta"])
def test_generate_content(sim: SimulatorServer, ver: str) -> None:
    response = requests.post(
        api(sim, "generateContent", ver=ver),
        json=PROMPT,
        headers={"x-goog-api-key": KEY},
        timeout=5,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    body = response.json()
    assert body["candidates"] == [
        {
            "content": {"role": "model", "parts": [{"text": REPLY}]},
            "finishReason": "STOP",
            "index": 0,
        }
    ]
    assert body["usageMetadata"] == {
        "promptTokenCount": 2,
        "candidatesTokenCount": 6,
        "totalTokenCount": 8,
    }
    assert body["modelVersion"] == MODEL
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", body["responseId"])


def test_reply_uses_the_last_content_and_has_a_default(sim: SimulatorServer) -> None:
    conversation = {
        "contents": [
            {"role": "user", "parts": [{"text": "first"}]},
            {"role": "model", "parts": [{"text": "answer"}]},
            {"role": "user", "parts": [{"text": "second "}, {"text": "question"}]},
        ]
    }
    text = generate(sim, json=conversation).json()["candidates"][0]["content"]["parts"][0]
    assert text == {"text": "L104 simulator reply to: second question"}
    empty = generate(sim, json={"contents": []}).json()
    assert empty["candidates"][0]["content"]["parts"][0]["text"] == "L104 simulator reply."
    assert empty["usageMetadata"]["promptTokenCount"] == 1


def test_sse_stream(sim: SimulatorServer) -> None:
    configure(sim, stream_chunks=5, chunk_delay_ms=100)
    started = time.monotonic()
    with requests.post(
        api(sim, "streamGenerateContent") + "?alt=sse",
        json=PROMPT,
        headers={"x-goog-api-key": KEY},
        stream=True,
        timeout=5,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["transfer-encoding"] == "chunked"
        http_chunks = list(response.raw.read_chunked())
    assert time.monotonic() - started >= 0.35  # four 100 ms gaps between five chunks
    assert len(http_chunks) == 5
    events = []
    for raw in http_chunks:  # each HTTP chunk is exactly one event
        assert raw.startswith(b"data: ") and raw.endswith(b"\r\n\r\n")
        assert raw.count(b"\r\n\r\n") == 1
        events.append(json.loads(raw[len(b"data: ") : -4]))
    texts = [event["candidates"][0]["content"]["parts"][0]["text"] for event in events]
    assert all(texts) and "".join(texts) == REPLY
    assert [("finishReason" in e["candidates"][0]) for e in events] == [False] * 4 + [True]
    assert len({event["responseId"] for event in events}) == 1
    assert {event["modelVersion"] for event in events} == {MODEL}
    usage = [event["usageMetadata"]["candidatesTokenCount"] for event in events]
    assert usage == sorted(usage) and usage[-1] == 6


def test_array_stream(sim: SimulatorServer) -> None:
    with requests.post(
        api(sim, "streamGenerateContent", ver="v1") + "?key=" + KEY,
        json=PROMPT,
        stream=True,
        timeout=5,
    ) as response:
        assert response.headers["content-type"] == "application/json; charset=UTF-8"
        assert response.headers["transfer-encoding"] == "chunked"
        http_chunks = list(response.raw.read_chunked())
    assert len(http_chunks) == 4  # the default stream_chunks, each sent on its own
    text = b"".join(http_chunks)
    assert text.startswith(b"[{") and text.endswith(b"}]") and text.count(b"},\r\n{") == 3
    chunks = json.loads(text)
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == REPLY
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.parametrize("alt", ["sse", "json"])
def test_stamped_chunks_carry_the_time_they_were_written(sim: SimulatorServer, alt: str) -> None:
    configure(sim, stream_chunks=3, chunk_delay_ms=50, stamp_chunks=1)
    before = time.time()
    response = requests.post(
        api(sim, "streamGenerateContent") + f"?alt={alt}",
        json=PROMPT,
        headers={"x-goog-api-key": KEY},
        timeout=5,
    )
    after = time.time()
    if alt == "sse":
        chunks = [json.loads(line[6:]) for line in response.text.split("\r\n\r\n") if line]
    else:
        chunks = response.json()
    stamps = [chunk["simSentAt"] for chunk in chunks]
    assert len(stamps) == 3 and before <= stamps[0] and stamps[-1] <= after
    # Each chunk is stamped after the pause before it, not when the stream began.
    assert all(later - earlier >= 0.05 for earlier, later in itertools.pairwise(stamps))
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == REPLY
    configure(sim, stamp_chunks=0)
    unstamped = generate(sim).json()
    assert "simSentAt" not in unstamped
    bad = requests.post(f"{sim.url}/_sim/config", json={"stamp_chunks": 2}, timeout=5)
    assert bad.status_code == 400


def test_stats_count_calls_in_flight_and_their_peak(sim: SimulatorServer) -> None:
    configure(sim, latency_ms=2000)

    def stats() -> dict[str, Any]:
        result: dict[str, Any] = requests.get(f"{sim.url}/_sim/stats", timeout=5).json()
        return result

    # Earlier tests may leave a hanging call behind: count from what is in flight now.
    base = stats()["in_flight"]
    with ThreadPoolExecutor(5) as pool:
        calls = [pool.submit(generate, sim) for _ in range(5)]
        deadline = time.monotonic() + 5
        while stats()["in_flight"] < base + 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stats()["in_flight"] == base + 5
        assert all(call.result().status_code == 200 for call in calls)
    after = stats()
    assert after["in_flight"] <= base and after["peak_in_flight"] >= base + 5
    requests.post(f"{sim.url}/_sim/reset", timeout=5)
    assert stats()["peak_in_flight"] <= base


@pytest.mark.parametrize(
    "body",
    [
        {"contents": [{"parts": [{"text": "one two three"}]}]},
        {
            "generateContentRequest": {
                "model": f"models/{MODEL}",
                "contents": [{"parts": [{"text": "one two three"}]}],
            }
        },
    ],
)
def test_count_tokens(sim: SimulatorServer, body: dict[str, Any]) -> None:
    response = requests.post(
        api(sim, "countTokens"), json=body, headers={"x-goog-api-key": KEY}, timeout=5
    )
    assert response.status_code == 200
    assert response.json() == {"totalTokens": 3}


def test_list_models_pages_and_get_model(sim: SimulatorServer) -> None:
    names: list[str] = []
    params: dict[str, Any] = {"pageSize": 3, "key": KEY}
    pages = 0
    while True:
        page = requests.get(f"{sim.url}/v1/models", params=params, timeout=5).json()
        pages += 1
        names += [model["name"] for model in page["models"]]
        if "nextPageToken" not in page:
            break
        params["pageToken"] = page["nextPageToken"]
    assert pages == 3
    assert names == [f"models/{m}" for m in DEFAULT_MODELS]
    everything = requests.get(f"{sim.url}/v1beta/models", params={"key": KEY}, timeout=5).json()
    assert len(everything["models"]) == len(DEFAULT_MODELS) and "nextPageToken" not in everything
    model = requests.get(f"{sim.url}/v1beta/models/{MODEL}?key={KEY}", timeout=5).json()
    assert model["name"] == f"models/{MODEL}" and model["displayName"] == "Gemini 3.8 Flash"
    assert model["inputTokenLimit"] == 1048576 and model["outputTokenLimit"] == 65536
    assert model["supportedGenerationMethods"] == ["generateContent", "countTokens"]


def test_unknown_model_and_path_and_method(sim: SimulatorServer) -> None:
    response = generate(sim, model="gemini-0-nope")
    assert response.status_code == 404
    assert error_of(response) == {
        "code": 404,
        "status": "NOT_FOUND",
        "message": "models/gemini-0-nope is not found for API version v1beta, "
        "or is not supported for generateContent.",
    }
    response = requests.get(f"{sim.url}/v1/models/gemini-0-nope?key={KEY}", timeout=5)
    assert response.status_code == 404 and "API version v1," in error_of(response)["message"]
    response = requests.get(f"{sim.url}/v2/elsewhere", timeout=5)
    assert error_of(response)["status"] == "NOT_FOUND"
    response = requests.get(api(sim, "generateContent"), headers={"x-goog-api-key": KEY}, timeout=5)
    assert response.status_code == 405 and error_of(response)


def test_models_can_be_configured() -> None:
    sim = start_in_thread(models=["alpha", "models/beta"])
    try:
        page = requests.get(f"{sim.url}/v1beta/models", timeout=5).json()
        assert [m["name"] for m in page["models"]] == ["models/alpha", "models/beta"]
        assert generate(sim, model="beta", headers={}).status_code == 200
        assert generate(sim, model=MODEL, headers={}).status_code == 404
    finally:
        sim.shutdown()


# --- authentication -----------------------------------------------------------------------


def test_auth(sim: SimulatorServer) -> None:
    missing = generate(sim, headers={})
    assert missing.status_code == 403
    assert error_of(missing)["status"] == "PERMISSION_DENIED"
    assert error_of(missing)["message"].startswith("Method doesn't allow unregistered callers")
    wrong = generate(sim, headers={"x-goog-api-key": "nope"})
    assert wrong.status_code == 400
    assert error_of(wrong) == {
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
    assert generate(sim).status_code == 200
    by_query = requests.post(api(sim, "generateContent") + f"?key={KEY}", json=PROMPT, timeout=5)
    assert by_query.status_code == 200
    # The old SDK's `$alt=json;enum-encoding=int` is accepted and ignored.
    old_sdk = api(sim, "generateContent") + "?%24alt=json%3Benum-encoding%3Dint"
    assert generate(sim, headers={"x-goog-api-key": KEY}, params=None).status_code == 200
    response = requests.post(old_sdk, json=PROMPT, headers={"x-goog-api-key": KEY}, timeout=5)
    assert response.status_code == 200 and response.json()["candidates"]
    log = requests.get(f"{sim.url}/_sim/requests", timeout=5).json()
    assert [(e["auth"], e["api_key"]) for e in log] == [
        ("none", None),
        ("header", "nope"),
        ("header", KEY),
        ("query", KEY),
        ("header", KEY),
        ("header", KEY),
    ]
    assert log[-1]["query"] == {"$alt": "json;enum-encoding=int"}


def test_auth_comes_before_faults(sim: SimulatorServer) -> None:
    fault(sim, "500")
    assert generate(sim, headers={}).status_code == 403
    assert generate(sim).status_code == 500


# --- faults -------------------------------------------------------------------------------


def test_429_has_quota_failure_and_retry_info(sim: SimulatorServer) -> None:
    fault(sim, "429", model=MODEL)
    response = generate(sim)
    assert response.status_code == 429
    error = error_of(response)
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["message"].startswith("You exceeded your current quota")
    assert error["message"].endswith("Please retry in 26s.")
    quota, retry = error["details"]
    assert quota["@type"] == "type.googleapis.com/google.rpc.QuotaFailure"
    (violation,) = quota["violations"]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    assert violation["quotaDimensions"] == {"location": "global", "model": MODEL}
    assert retry == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}


def test_429_variants(sim: SimulatorServer) -> None:
    fault(sim, "429_day", model=MODEL)
    error = error_of(generate(sim))
    assert error["details"][0]["violations"][0]["quotaId"] == (
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    )
    assert error["details"][1]["retryDelay"] == "3600s"
    fault(sim, "429", model=MODEL, retry_delay="45.83s")
    error = error_of(generate(sim))
    assert error["details"][1]["retryDelay"] == "45.83s" and "retry in 45.83s" in error["message"]
    fault(sim, "429", model=MODEL, no_details=True)
    assert "details" not in error_of(generate(sim))


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("500", "INTERNAL", "An internal error has occurred."),
        ("503", "UNAVAILABLE", "The model is overloaded. Please try again later."),
        ("504", "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
    ],
)
def test_error_faults(sim: SimulatorServer, kind: str, status: str, message: str) -> None:
    fault(sim, kind)
    response = generate(sim)
    assert response.status_code == int(kind)
    assert error_of(response) == {"code": int(kind), "status": status, "message": message}


def test_count_expires_and_specific_model_wins(sim: SimulatorServer) -> None:
    fault(sim, "503", count=2)
    fault(sim, "500", model=MODEL, count=1)
    assert generate(sim).status_code == 500  # the model's own fault wins over "*"
    assert generate(sim).status_code == 503  # then "*" applies
    assert generate(sim, model="gemini-3.5-flash").status_code == 503
    assert generate(sim).status_code == 200  # both used up
    assert requests.get(f"{sim.url}/_sim/faults", timeout=5).json() == []
    stats = requests.get(f"{sim.url}/_sim/stats", timeout=5).json()
    assert stats["faults_served"] == 3 and stats["total"] == 4


def test_faults_list_replace_and_clear(sim: SimulatorServer) -> None:
    fault(sim, "503", model=MODEL)
    fault(sim, "504", model=MODEL)  # replaces the 503
    listed = requests.get(f"{sim.url}/_sim/faults", timeout=5).json()
    assert listed == [{"model": MODEL, "fault": "504", "remaining": None, "params": {}}]
    # Model errors do not apply to GET models/{model} nor to /_sim/.
    assert requests.get(f"{sim.url}/v1beta/models/{MODEL}?key={KEY}", timeout=5).ok
    assert requests.delete(f"{sim.url}/_sim/faults", timeout=5).json() == {"cleared": 1}
    assert generate(sim).status_code == 200
    for bad in ({"fault": "nope"}, {"fault": "hang", "ms": 5}, {"fault": "429", "count": 0}):
        response = requests.post(f"{sim.url}/_sim/faults", json=bad, timeout=5)
        assert response.status_code == 400 and error_of(response)


def test_reset_fault_resets_the_connection(sim: SimulatorServer) -> None:
    fault(sim, "reset", count=1)
    with pytest.raises(requests.ConnectionError):
        generate(sim)
    assert generate(sim).status_code == 200


def test_hang(sim: SimulatorServer) -> None:
    fault(sim, "hang", model=MODEL, seconds=2, count=1)
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        generate(sim, timeout=0.5)
    assert time.monotonic() - started < 1.9
    # Other requests are served while the hang lasts.
    assert generate(sim, model="gemini-3.5-flash").status_code == 200


def test_hang_applies_to_get_model_and_ends_with_a_close(sim: SimulatorServer) -> None:
    fault(sim, "hang", seconds=0.3, count=1)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{sim.url}/v1beta/models/{MODEL}?key={KEY}", timeout=5)


def test_latency_and_slow_body(sim: SimulatorServer) -> None:
    fault(sim, "latency", ms=300, count=1)
    started = time.monotonic()
    assert generate(sim).json()["candidates"]
    assert time.monotonic() - started >= 0.3
    fault(sim, "slow_body", ms=300, count=1)
    with generate(sim, stream=True) as response:  # returns once the headers are in
        assert response.status_code == 200
        assert int(response.headers["content-length"]) > 200
        started = time.monotonic()
        body = response.content
        spread = time.monotonic() - started
    assert spread >= 0.15  # the body trickled in after the headers
    assert json.loads(body)["candidates"][0]["content"]["parts"][0]["text"] == REPLY
    configure(sim, latency_ms=200)
    started = time.monotonic()
    assert generate(sim).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_malformed(sim: SimulatorServer) -> None:
    fault(sim, "malformed", count=2)
    response = generate(sim)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    with pytest.raises(ValueError):
        response.json()
    with requests.post(
        api(sim, "streamGenerateContent") + "?alt=sse",
        json=PROMPT,
        headers={"x-goog-api-key": KEY},
        stream=True,
        timeout=5,
    ) as stream:
        events = [line for line in stream.iter_lines() if line]
    assert len(events) == 1 and events[0].startswith(b"data: ")
    with pytest.raises(ValueError):
        json.loads(events[0][len(b"data: ") :])


def test_stream_cut(sim: SimulatorServer) -> None:
    fault(sim, "stream_cut", after=2, count=1)
    events: list[bytes] = []
    with (
        pytest.raises(requests.exceptions.ChunkedEncodingError),
        requests.post(
            api(sim, "streamGenerateContent") + "?alt=sse",
            json=PROMPT,
            headers={"x-goog-api-key": KEY},
            stream=True,
            timeout=5,
        ) as response,
    ):
        assert response.status_code == 200
        events.extend(line for line in response.iter_lines() if line)
    assert len(events) == 2
    assert "finishReason" not in json.loads(events[-1][len(b"data: ") :])["candidates"][0]
    fault(sim, "stream_cut", count=1)  # on a non-stream call it resets
    with pytest.raises(requests.ConnectionError):
        generate(sim)


# --- control API and robustness -----------------------------------------------------------


def test_stats_requests_and_reset(sim: SimulatorServer) -> None:
    generate(sim)
    generate(sim, model="gemini-3.5-flash", headers={})
    requests.post(api(sim, "countTokens"), json=PROMPT, headers={"x-goog-api-key": KEY}, timeout=5)
    requests.get(f"{sim.url}/v1beta/models", params={"key": KEY}, timeout=5)
    stats = requests.get(f"{sim.url}/_sim/stats", timeout=5).json()
    # in flight: see the in-flight test below; by key: tests/test_simulator_keys.py
    for counter in ("in_flight", "peak_in_flight", "by_key", "by_key_model"):
        stats.pop(counter)
    assert stats == {
        "total": 4,
        "by_model": {MODEL: 2, "gemini-3.5-flash": 1},
        "by_method": {"generateContent": 2, "countTokens": 1, "listModels": 1},
        "faults_served": 0,
        "closed_by_client": 0,
        "closed_by_client_by_fault": {"hang": 0, "slow": 0, "stall": 0},
    }
    log = requests.get(f"{sim.url}/_sim/requests", params={"limit": 2}, timeout=5).json()
    assert [entry["api_method"] for entry in log] == ["countTokens", "listModels"]
    first = requests.get(f"{sim.url}/_sim/requests", timeout=5).json()[0]
    assert first["body"] == PROMPT and first["method"] == "POST"
    assert first["path"] == f"/v1beta/models/{MODEL}:generateContent"
    assert first["user_agent"].startswith("python-requests/")
    configure(sim, stream_chunks=2)
    fault(sim, "503")
    assert requests.post(f"{sim.url}/_sim/reset", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{sim.url}/_sim/stats", timeout=5).json()["total"] == 0
    assert requests.get(f"{sim.url}/_sim/requests", timeout=5).json() == []
    assert requests.get(f"{sim.url}/_sim/faults", timeout=5).json() == []
    assert requests.get(f"{sim.url}/_sim/config", timeout=5).json() == {
        "stream_chunks": 4,
        "chunk_delay_ms": 0,
        "latency_ms": 0,
        "stamp_chunks": 0,
    }
    assert requests.get(f"{sim.url}/_sim/health", timeout=5).json() == {"status": "ok"}
    bad = requests.post(f"{sim.url}/_sim/config", json={"stream_chunks": 0}, timeout=5)
    assert bad.status_code == 400


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"{not json", "bad JSON"), (b'{"contents": "\xff\xfe"}', "invalid UTF-8"), (b"[1]", "array")],
)
def test_bad_bodies(sim: SimulatorServer, data: bytes, reason: str) -> None:
    response = generate(sim, json=None, data=data)
    assert response.status_code == 400, reason
    assert error_of(response)["status"] == "INVALID_ARGUMENT"


def test_chunked_request_body(sim: SimulatorServer) -> None:
    payload = json.dumps(PROMPT).encode()
    response = generate(sim, json=None, data=iter([payload[:10], payload[10:]]))
    assert response.status_code == 200
    assert response.json()["candidates"][0]["content"]["parts"][0]["text"] == REPLY


def test_framing_errors(sim: SimulatorServer) -> None:
    path = f"/v1beta/models/{MODEL}:generateContent"
    huge = raw_exchange(
        sim,
        (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nx-goog-api-key: {KEY}\r\n"
            "Content-Length: 20000000\r\n\r\n{"
        ).encode(),
    )
    assert huge.startswith(b"HTTP/1.1 413 ") and b'"INVALID_ARGUMENT"' in huge
    no_length = raw_exchange(
        sim,
        (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nx-goog-api-key: {KEY}\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    assert no_length.startswith(b"HTTP/1.1 400 ") and b"Invalid JSON payload" in no_length
    garbage = raw_exchange(sim, b"GARBAGE\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 ") and b'"error"' in garbage
    bad_chunks = raw_exchange(
        sim,
        (f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").encode(),
    )
    assert bad_chunks.startswith(b"HTTP/1.1 400 ")
    assert generate(sim).status_code == 200


def test_keep_alive_and_concurrency(sim: SimulatorServer) -> None:
    with requests.Session() as session:
        for _ in range(20):
            response = session.post(
                api(sim, "generateContent"),
                json=PROMPT,
                headers={"x-goog-api-key": KEY},
                timeout=5,
            )
            assert response.status_code == 200
    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda _: generate(sim).status_code, range(64)))
    assert codes == [200] * 64
    assert requests.get(f"{sim.url}/_sim/stats", timeout=5).json()["total"] == 84


def test_shutdown_ends_hangs_promptly() -> None:
    sim = start_in_thread()
    fault(sim, "hang", seconds=600)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            generate(sim, timeout=30)
        except requests.RequestException as error:
            outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.3)  # let the request reach the hang
    started = time.monotonic()
    sim.shutdown()
    caller.join(10)
    assert not caller.is_alive() and time.monotonic() - started < 5
    assert len(outcome) == 1 and isinstance(outcome[0], requests.ConnectionError)


# --- the command line ---------------------------------------------------------------------


def test_cli_serves_and_exits_cleanly_on_sigterm() -> None:
    args = [
        sys.executable,
        "-m",
        "app.simulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--api-key",
        "cli-key",
        "--models",
        "gemini-a,gemini-b",
    ]
    with subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.fullmatch(
                r"L104 Gemini simulator listening on (http://127\.0\.0\.1:(\d+))\n", line
            )
            assert match, line
            url, port = match.group(1), int(match.group(2))
            assert port > 0
            assert requests.get(f"{url}/_sim/health", timeout=5).json() == {"status": "ok"}
            response = requests.post(
                f"{url}/v1beta/models/gemini-b:generateContent",
                json=PROMPT,
                headers={"x-goog-api-key": "cli-key"},
                timeout=5,
            )
            assert response.json()["modelVersion"] == "gemini-b"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
