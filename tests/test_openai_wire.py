"""OpenAI's error shape and retry headers, and the checks of OpenAI-shaped requests."""

from __future__ import annotations

import pytest

from app.api.openai_wire import (
    InvalidField,
    ModelNotFound,
    check_chat,
    check_embedding_input,
    error_body,
    model_field,
    retry_headers,
    with_model,
)
from app.errors import ApiError, BadRequest
from app.resilience.gateway import retry_hint
from app.surfaces import GEMINI, LEGACY, NODE, OPENAI, api_of


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1beta/openai/chat/completions", OPENAI),
        ("/openai/v1/embeddings", OPENAI),
        ("/v1beta/openai", OPENAI),
        ("/v1beta/openaix/models", GEMINI),
        ("/v1beta/models/gemini-x:generateContent", GEMINI),
        ("/v1/models", GEMINI),
        ("/api/v6/stream", LEGACY),
        ("/health", NODE),
        ("/self/status", NODE),
    ],
)
def test_api_of_path(path: str, api: str) -> None:
    assert api_of(path) == api


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        (BadRequest("bad"), "invalid_request_error", "invalid_request"),
        (ApiError(401, "who"), "authentication_error", "invalid_api_key"),
        (ApiError(403, "no"), "permission_error", "permission_denied"),
        (ModelNotFound("m", "chat", ("a",)), "invalid_request_error", "model_not_found"),
        (ApiError(413, "big"), "invalid_request_error", "request_too_large"),
        (ApiError(429, "slow down"), "rate_limit_error", "rate_limit_exceeded"),
        (ApiError(500, "oops"), "server_error", "internal"),
        (ApiError(503, "down"), "server_error", "unavailable"),
        (ApiError(504, "late"), "server_error", "deadline_exceeded"),
    ],
)
def test_error_body_is_openai_shaped(error: ApiError, kind: str, code: str) -> None:
    body = error_body(error)
    assert body == {"error": {"message": error.message, "type": kind, "param": None, "code": code}}


def test_invalid_field_names_its_param() -> None:
    assert error_body(InvalidField("messages", "x"))["error"]["param"] == "messages"


def _refusal(code: int, wait: float) -> ApiError:
    details, _ = retry_hint(wait)
    error = ApiError(code, "refused", details=details)
    error.fail_fast = True
    return error


def test_retry_headers_let_the_sdk_retry_only_a_short_refusal() -> None:
    short = retry_headers(_refusal(503, 0.8))
    assert short == {"Retry-After": "1", "retry-after-ms": "800", "x-should-retry": "true"}
    long = retry_headers(_refusal(429, 26.5))
    assert long == {"Retry-After": "27", "retry-after-ms": "26500", "x-should-retry": "false"}
    details, _ = retry_hint(1.0)
    after_retries = retry_headers(ApiError(503, "upstream failed", details=details))
    assert after_retries["x-should-retry"] == "false"
    assert retry_headers(ApiError(500, "no hint")) == {"x-should-retry": "false"}
    assert retry_headers(BadRequest("bad")) == {}


def test_model_field() -> None:
    served = ("gemini-a", "gemini-b")
    assert model_field({"model": "models/gemini-b"}, served, "chat", False) == "gemini-b"
    with pytest.raises(ModelNotFound):
        model_field({"model": "gemini-c"}, served, "chat", False)
    assert model_field({"model": "gemini-c"}, served, "chat", True) == "gemini-c"
    for bad in ({}, {"model": ""}, {"model": 3}, {"model": "../x"}):
        with pytest.raises(InvalidField):
            model_field(bad, served, "chat", True)


def test_check_chat() -> None:
    assert check_chat({"messages": [{"role": "user", "content": "hi"}]}) is False
    assert check_chat({"messages": [{"role": "user", "content": "hi"}], "stream": True})
    for bad in (
        {},
        {"messages": []},
        {"messages": "hi"},
        {"messages": [{"content": "no role"}]},
        {"messages": [{"role": "user"}], "stream": "yes"},
        {"messages": [{"role": "user"}], "stream_options": []},
    ):
        with pytest.raises(InvalidField):
            check_chat(bad)


def test_check_embedding_input() -> None:
    for good in ("text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        check_embedding_input({"input": good})
    for bad in (None, "", [], [""], [1, "a"], [[]], {"text": "x"}, [True]):
        with pytest.raises(InvalidField):
            check_embedding_input({"input": bad})


def test_with_model_rewrites_only_the_model() -> None:
    body = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.1}
    assert with_model(body, "b") == (
        b'{"model": "b", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.1}'
    )
