"""Bad input gets a 4xx in its API's format (Gemini's, or OpenAI's on the OpenAI-compatible
API) and never reaches upstream."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from tests.conftest import MAX_REQUEST_BYTES
from tests.support.processes import Service
from tests.support.simulator_client import SimulatorControl

PROMPT = json.dumps({"contents": [{"parts": [{"text": "hi"}]}]}).encode()
GEN = "/v1beta/models/gemini-3.8-flash:generateContent"


def _send(
    node: Service,
    method: str,
    path: str,
    body: bytes | Iterator[bytes] | None = PROMPT,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, object], str]:
    """Send exactly `path` (no client-side normalisation) and return status, JSON, raw."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    all_headers = dict(headers or {})
    if content_type:
        all_headers["Content-Type"] = content_type
    encode_chunked = body is not None and not isinstance(body, bytes)
    conn.request(method, path, body=body, headers=all_headers, encode_chunked=encode_chunked)
    response = conn.getresponse()
    raw = response.read().decode("utf-8", "replace")
    conn.close()
    return response.status, json.loads(raw), raw


def _assert_gemini_error(status: int, body: dict[str, object], raw: str, expected: int) -> None:
    assert status == expected, raw
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == expected
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["status"], str) and error["status"].isupper()
    assert "Traceback" not in raw and 'File "' not in raw


BAD_PATHS = [
    ("/v1beta/models/..:generateContent", 400),
    ("/v1beta/models/%2e%2e:generateContent", 400),
    ("/v1beta/models/%2E%2E%2Fx:generateContent", 400),
    ("/v1beta/models/../v1beta/models/gemini-3.8-flash:generateContent", 400),
    ("/v1beta/models/a%2Fb:generateContent", 400),
    ("/v1beta/models/a/b:generateContent", 400),
    ("/v1beta/models/gemini%3Fx:generateContent", 400),
    ("/v1beta/models/gemini%23x:generateContent", 400),
    ("/v1beta/models/gemini-3.8-flash%3Fkey=x:generateContent", 400),
    ("/v1beta/models/" + "g" * 300 + ":generateContent", 400),
    ("/v1beta/models/gemini-unknown:generateContent", 400),
    ("/v1beta/models/gemini-3.8-flash:embedContent", 400),  # not an embedding model
    ("/v1beta/models/gemini-embedding-001:generateContent", 400),  # not a generation model
    ("/v1beta/models/gemini-embedding-002:batchEmbedContents", 400),
    ("/v1beta/models/gemini-3.8-flash:fooBar", 404),
    ("/v1beta/models/gemini-3.8-flash", 405),
    ("/v1beta/models/gemini-3.8-flash:streamGenerateContent?alt=proto", 400),
    ("/v2/models/gemini-3.8-flash:generateContent", 404),
]


@pytest.mark.parametrize(("path", "expected"), BAD_PATHS)
def test_bad_paths(node: Service, simulator: SimulatorControl, path: str, expected: int) -> None:
    _assert_gemini_error(*_send(node, "POST", path), expected)
    assert simulator.calls() == 0


BAD_BODIES = [
    (b"{not json", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b'"text"', "application/json", 400),
    (b"{}", "application/json", 400),
    (b'{"contents": []}', "application/json", 400),
    (b'{"contents": "hi"}', "application/json", 400),
    (b'{"contents": [1]}', "application/json", 400),
    (b'{"contents": [{"parts": "x"}]}', "application/json", 400),
    (b'{"contents": [{"parts": [{"text": "\xff\xfe"}]}]}', "application/json", 400),
    (b'{"contents": NaN}', "application/json", 400),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),
    (b"", "application/json", 400),
    (PROMPT, "text/plain", 415),
    (PROMPT, "application/x-www-form-urlencoded", 415),
    (PROMPT, "multipart/form-data; boundary=x", 415),
]


@pytest.mark.parametrize(("body", "content_type", "expected"), BAD_BODIES)
@pytest.mark.parametrize("method", ["generateContent", "streamGenerateContent", "countTokens"])
def test_bad_bodies(
    node: Service,
    simulator: SimulatorControl,
    body: bytes,
    content_type: str,
    expected: int,
    method: str,
) -> None:
    path = f"/v1beta/models/gemini-3.8-flash:{method}?alt=sse"
    _assert_gemini_error(*_send(node, "POST", path, body, content_type), expected)
    assert simulator.calls() == 0


def test_oversize_body_is_refused(node: Service, simulator: SimulatorControl) -> None:
    text = "x" * (MAX_REQUEST_BYTES + 1)
    body = json.dumps({"contents": [{"parts": [{"text": text}]}]}).encode()
    status, error, raw = _send(node, "POST", GEN, body)
    _assert_gemini_error(status, error, raw, 413)
    assert simulator.calls() == 0


def test_oversize_chunked_body_is_refused(node: Service, simulator: SimulatorControl) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"contents": [{"parts": [{"text": "'
        for _ in range(MAX_REQUEST_BYTES // 4096 + 2):
            yield b"x" * 4096
        yield b'"}]}]}'

    _assert_gemini_error(*_send(node, "POST", GEN, chunks()), 413)
    assert simulator.calls() == 0


def test_bad_paging(node: Service, simulator: SimulatorControl) -> None:
    for query in ("pageSize=abc", "pageSize=0", "pageSize=5000", "pageToken=a%2F..%2Fb"):
        _assert_gemini_error(*_send(node, "GET", f"/v1beta/models?{query}", None), 400)
    assert simulator.calls() == 0


def test_get_unknown_model(node: Service, simulator: SimulatorControl) -> None:
    _assert_gemini_error(*_send(node, "GET", "/v1beta/models/gemini-unknown", None), 404)
    _assert_gemini_error(*_send(node, "GET", "/v1beta/models/..%2Fx", None), 400)
    assert simulator.calls() == 0


@pytest.mark.parametrize(
    "body", [b"{}", b'{"signal": ""}', b'{"message": 5}', b"nope", b'{"signal": ["x"]}']
)
def test_legacy_stream_bad_input(node: Service, simulator: SimulatorControl, body: bytes) -> None:
    _assert_gemini_error(*_send(node, "POST", "/api/v6/stream", body), 400)
    assert simulator.calls() == 0


def test_unknown_path_and_wrong_method(node: Service, simulator: SimulatorControl) -> None:
    _assert_gemini_error(*_send(node, "GET", "/nothing-here", None), 404)
    _assert_gemini_error(*_send(node, "GET", GEN, None), 405)
    _assert_gemini_error(*_send(node, "DELETE", "/health", None), 405)
    assert simulator.calls() == 0


EMBED = "/v1beta/models/gemini-embedding-001"
BAD_EMBEDDINGS = [
    (":embedContent", b"{}"),
    (":embedContent", b'{"content": "text"}'),
    (":embedContent", b'{"content": {"parts": []}}'),
    (":embedContent", b'{"content": {"parts": ["x"]}}'),
    (":embedContent", b'{"content": {"parts": [{"text": "x"}]}, "outputDimensionality": 0}'),
    (":embedContent", b'{"content": {"parts": [{"text": "x"}]}, "outputDimensionality": "8"}'),
    (":batchEmbedContents", b'{"requests": []}'),
    (":batchEmbedContents", b'{"requests": {"content": {}}}'),
    (":batchEmbedContents", b'{"requests": [{"content": {"parts": [{"text": "x"}]}}, 3]}'),
    (
        ":batchEmbedContents",
        b'{"requests": [{"model": "models/gemini-3.8-flash", '
        b'"content": {"parts": [{"text": "x"}]}}]}',
    ),
    (
        ":batchEmbedContents",
        json.dumps({"requests": [{"content": {"parts": [{"text": "x"}]}}] * 101}).encode(),
    ),
]


@pytest.mark.parametrize(("method", "body"), BAD_EMBEDDINGS)
def test_bad_embedding_bodies(
    node: Service, simulator: SimulatorControl, method: str, body: bytes
) -> None:
    _assert_gemini_error(*_send(node, "POST", EMBED + method, body), 400)
    assert simulator.calls() == 0


def _assert_openai_error(status: int, body: dict[str, object], raw: str, expected: int) -> None:
    assert status == expected, raw
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and isinstance(error["code"], str)
    assert "Traceback" not in raw and 'File "' not in raw


CHAT = "/v1beta/openai/chat/completions"
EMBEDDINGS = "/v1beta/openai/embeddings"
MESSAGES = [{"role": "user", "content": "hi"}]
BAD_OPENAI = [
    ("POST", CHAT, b"{not json", "application/json", 400),
    ("POST", CHAT, b"[]", "application/json", 400),
    ("POST", CHAT, json.dumps({"messages": MESSAGES}).encode(), "application/json", 400),
    ("POST", CHAT, b'{"model": "gemini-3.8-flash"}', "application/json", 400),
    ("POST", CHAT, b'{"model": "gemini-3.8-flash", "messages": "hi"}', "application/json", 400),
    ("POST", CHAT, b'{"model": "gemini-3.8-flash", "messages": []}', "application/json", 400),
    ("POST", CHAT, b'{"model": "gemini-3.8-flash", "messages": [1]}', "application/json", 400),
    (
        "POST",
        CHAT,
        json.dumps({"model": "gemini-3.8-flash", "messages": MESSAGES, "stream": "yes"}).encode(),
        "application/json",
        400,
    ),
    ("POST", CHAT, json.dumps({"model": "../x", "messages": MESSAGES}).encode(), None, 400),
    (
        "POST",
        CHAT,
        json.dumps({"model": "gemini-unknown", "messages": MESSAGES}).encode(),
        "application/json",
        404,
    ),
    (
        "POST",
        CHAT,
        json.dumps({"model": "gemini-embedding-001", "messages": MESSAGES}).encode(),
        "application/json",
        404,
    ),
    ("POST", CHAT, json.dumps({"model": "x", "messages": MESSAGES}).encode(), "text/plain", 415),
    ("POST", EMBEDDINGS, b'{"model": "gemini-embedding-001"}', "application/json", 400),
    ("POST", EMBEDDINGS, b'{"model": "gemini-embedding-001", "input": ""}', None, 400),
    ("POST", EMBEDDINGS, b'{"model": "gemini-embedding-001", "input": [{}]}', None, 400),
    ("POST", EMBEDDINGS, b'{"model": "gemini-3.8-flash", "input": "x"}', None, 404),
    ("GET", "/v1beta/openai/models/gemini-unknown", None, None, 404),
    ("GET", "/v1beta/openai/models/..%2Fx", None, None, 400),
    ("GET", "/v1beta/openai/nothing-here", None, None, 404),
    ("POST", "/openai/v1/completions", b"{}", "application/json", 404),
    ("GET", CHAT, None, None, 404),
]


@pytest.mark.parametrize(("method", "path", "body", "content_type", "expected"), BAD_OPENAI)
def test_bad_openai_input(
    node: Service,
    simulator: SimulatorControl,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str | None,
    expected: int,
) -> None:
    sent = _send(node, method, path, body, content_type or "application/json")
    _assert_openai_error(*sent, expected)
    assert simulator.calls() == 0


def test_oversize_openai_body_is_refused(node: Service, simulator: SimulatorControl) -> None:
    text = "x" * (MAX_REQUEST_BYTES + 1)
    body = json.dumps(
        {"model": "gemini-3.8-flash", "messages": [{"role": "user", "content": text}]}
    )
    _assert_openai_error(*_send(node, "POST", CHAT, body.encode()), 413)
    assert simulator.calls() == 0
