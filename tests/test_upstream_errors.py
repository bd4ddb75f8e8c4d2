"""Upstream error answers become the right node errors."""

from __future__ import annotations

import json

from app.errors import (
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)
from app.upstream.errors import error_from_response


def _body(code: int, status: str, message: str, details: list[object] | None = None) -> bytes:
    error: dict[str, object] = {"code": code, "status": status, "message": message}
    if details is not None:
        error["details"] = details
    return json.dumps({"error": error}, indent=2).encode()


def test_429_reads_retry_info_and_per_day_quota() -> None:
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "45.83s"},
    ]
    error = error_from_response(429, _body(429, "RESOURCE_EXHAUSTED", "quota", details), "m")
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_delay == 45.83
    assert error.per_day
    assert error.model == "m"
    assert error.body()["error"]["details"] == details


def test_429_without_details() -> None:
    error = error_from_response(429, _body(429, "RESOURCE_EXHAUSTED", "quota"), "m")
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_delay is None
    assert not error.per_day


def test_refused_node_key_is_not_passed_to_the_client() -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
    content = _body(400, "INVALID_ARGUMENT", "API key not valid.", details)
    error = error_from_response(400, content, "m")
    assert isinstance(error, UpstreamRejected)
    assert error.code == 502
    assert "API key" not in error.message
    assert error_from_response(403, _body(403, "PERMISSION_DENIED", "no"), "m").code == 502


def test_client_errors_pass_through() -> None:
    error = error_from_response(400, _body(400, "INVALID_ARGUMENT", "bad field"), "m")
    assert isinstance(error, UpstreamRejected)
    assert (error.code, error.status, error.message) == (400, "INVALID_ARGUMENT", "bad field")
    assert not error.retryable


def test_server_errors_are_retryable() -> None:
    for code in (500, 503, 504):
        error = error_from_response(code, _body(code, "X", "down"), "m")
        assert isinstance(error, UpstreamUnavailable)
        assert error.retryable
        assert error.code == code
    odd = error_from_response(599, b"<html>", "m")
    assert odd.code == 502
    assert odd.message == "Upstream answered HTTP 599."


def test_openai_surface_errors_come_as_an_array() -> None:
    """Gemini's OpenAI-compatible API wraps the native error in a JSON array; the 429's
    RetryInfo is read from inside it."""
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}]
    inner = json.loads(_body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted", details))
    error = error_from_response(429, json.dumps([inner]).encode(), "m")
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_delay == 26.0
    assert error.message == "Resource has been exhausted"
    unavailable = error_from_response(503, json.dumps([{"error": {"code": 503}}]).encode(), "m")
    assert isinstance(unavailable, UpstreamUnavailable) and unavailable.retryable
    assert isinstance(error_from_response(500, b"[]", "m"), UpstreamUnavailable)
