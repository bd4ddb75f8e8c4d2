"""OpenAI's wire format, for the node's OpenAI-compatible API: error bodies and the retry
headers the `openai` SDKs read, SSE framing with `[DONE]`, and checks of chat and embedding
requests before anything goes upstream."""

from __future__ import annotations

import json
import math
from typing import Any

from flask import Response

from app.errors import ApiError, BadRequest
from app.model_names import InvalidModelName, strip_models_prefix, validate_model_name
from app.upstream.errors import retry_delay_seconds

JSON_TYPE = "application/json"
DONE = b"data: [DONE]\n\n"
# The SDKs retry 408, 409, 429 and >= 500 on their own (twice by default), honouring
# retry-after-ms / Retry-After. The node lets them only when it knows it can answer within this.
SDK_RETRY_MAX_WAIT = 2.0

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}
_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limit_exceeded",
}


class InvalidField(BadRequest):
    """A chat or embedding request with a bad field; OpenAI names it in `param`."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class ModelNotFound(ApiError):
    """A model this node does not serve for the call: OpenAI's 404 `model_not_found`."""

    def __init__(self, model: str, kind: str, served: tuple[str, ...]) -> None:
        super().__init__(
            404,
            f"The model `{model}` does not exist on this node for {kind}; "
            f"it serves: {', '.join(served)}.",
        )


def error_body(error: ApiError) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}` for `error`."""
    code = error.code
    if isinstance(error, ModelNotFound):
        reason = "model_not_found"
    else:
        reason = _CODES.get(code) or error.status.lower()
    kind = _TYPES.get(code) or ("server_error" if code >= 500 else "invalid_request_error")
    return {
        "error": {
            "message": error.message,
            "type": kind,
            "param": getattr(error, "param", None),
            "code": reason,
        }
    }


def retry_headers(error: ApiError) -> dict[str, str]:
    """Retry-After and retry-after-ms when the node knows the wait, and x-should-retry:
    true only for a refusal made without calling upstream that ends within
    SDK_RETRY_MAX_WAIT (a full worker, a model resting for a moment); after its own retries
    and rotation the node tells the SDK not to multiply them."""
    if error.code not in (408, 409, 429) and error.code < 500:
        return {}
    wait = retry_delay_seconds(error.details)
    headers: dict[str, str] = {}
    if wait is not None:
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
        headers["retry-after-ms"] = str(max(1, round(wait * 1000)))
    soon = error.fail_fast and wait is not None and wait <= SDK_RETRY_MAX_WAIT
    headers["x-should-retry"] = "true" if soon else "false"
    return headers


def error_response(error: ApiError) -> Response:
    """`error` as the OpenAI API answers it."""
    response = Response(json.dumps(error_body(error)), status=error.code, content_type=JSON_TYPE)
    response.headers.update(error.headers)
    response.headers.update(retry_headers(error))
    return response


def frame(data: bytes) -> bytes:
    """One SSE event as OpenAI frames it."""
    return b"data: " + data + b"\n\n"


def error_event(error: ApiError) -> bytes:
    """A failure after the stream began: an error event (the stream then ends with DONE)."""
    return frame(json.dumps(error_body(error)).encode())


def model_field(body: dict[str, Any], served: tuple[str, ...], kind: str, any_ok: bool) -> str:
    """The body's `model` as a model id (a `models/` prefix taken off), one served for
    `kind`; `any_ok` (ALLOW_UNLISTED_MODELS) lets any valid id through."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidField("model", "You must provide a model parameter.")
    try:
        name = validate_model_name(strip_models_prefix(model))
    except InvalidModelName as exc:
        raise InvalidField("model", f"Invalid model name: {exc}.") from None
    if name not in served and not any_ok:
        raise ModelNotFound(name, kind, served)
    return name


def check_chat(body: dict[str, Any]) -> bool:
    """A chat completion request's own fields; returns whether it asks for a stream."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidField("messages", "`messages` must be a non-empty array of messages.")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidField(
                f"messages[{index}]", f"`messages[{index}]` must be an object with a `role`."
            )
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidField("stream", "`stream` must be true or false.")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidField("stream_options", "`stream_options` must be an object.")
    return bool(stream)


def check_embedding_input(body: dict[str, Any]) -> None:
    """`input`: a non-empty string, a token array, or a non-empty array of either."""
    value = body.get("input")
    if isinstance(value, str) and value:
        return
    if isinstance(value, list) and value and all(_one_input(item) for item in value):
        return
    if isinstance(value, list) and value and _one_input(value):
        return  # one array of tokens
    raise InvalidField(
        "input", "`input` must be a non-empty string or a non-empty array of strings."
    )


def _one_input(item: Any) -> bool:
    if isinstance(item, str):
        return bool(item)
    if isinstance(item, list):
        return bool(item) and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
    return False


def with_model(body: dict[str, Any], model: str) -> bytes:
    """The request as sent upstream: the client's body with `model` set to the one tried."""
    return json.dumps({**body, "model": model}).encode()


def wants_usage(body: dict[str, Any]) -> bool:
    """Whether a streaming client asked for the usage chunk (`stream_options.include_usage`)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def is_usage_chunk(data: bytes) -> bool:
    """The last chunk of a stream with `include_usage`: `usage` and no choices."""
    if b'"usage"' not in data:
        return False
    try:
        chunk = json.loads(data)
    except ValueError:
        return False
    return isinstance(chunk, dict) and not chunk.get("choices") and bool(chunk.get("usage"))
