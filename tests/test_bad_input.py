"""Bad input gets a Gemini-format 4xx and never reaches upstream."""

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
    ("/v1beta/models/gemini-3.8-flash:embedContent", 404),
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
