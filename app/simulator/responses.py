"""Gemini-shaped bodies: replies, stream chunks, model objects and error objects (native,
and the array-wrapped form of the OpenAI-compatible surface)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from app.simulator.errors import ApiError

JsonObject = dict[str, Any]

DEFAULT_MODELS: tuple[str, ...] = (
    "gemini-3.8-flash",
    "gemini-3.7-flash",
    "gemini-3.5-flash",
    "gemini-3.5-flash-lite",
    "gemini-3.1-flash-lite",
    "gemini-3.1-pro-preview",
    "gemini-2.5-flash-lite",
    "gemini-embedding-001",
)
REPLY_PREFIX = "L104 simulator reply to: "
EMPTY_REPLY = "L104 simulator reply."
INPUT_TOKEN_LIMIT = 1048576
OUTPUT_TOKEN_LIMIT = 65536
EMBEDDING_INPUT_TOKEN_LIMIT = 2048

# google.rpc status names for the codes the simulator answers with.
STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    411: "INVALID_ARGUMENT",
    413: "INVALID_ARGUMENT",
    414: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    431: "INVALID_ARGUMENT",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    505: "INVALID_ARGUMENT",
}
NO_KEY_MESSAGE = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
BAD_KEY_MESSAGE = "API key not valid. Please pass a valid API key."
BAD_KEY_DETAILS: list[JsonObject] = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
    }
]
SUSPENDED_DETAILS: list[JsonObject] = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "CONSUMER_SUSPENDED",
        "domain": "googleapis.com",
    }
]
QUOTA_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"


def compact(obj: object) -> bytes:
    """Serialize `obj` as compact UTF-8 JSON."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def error_body(
    code: int, message: str, status: str | None = None, details: list[JsonObject] | None = None
) -> bytes:
    """A Gemini error body, 2-space indented like the real API."""
    error: JsonObject = {
        "code": code,
        "message": message,
        "status": status or STATUS_NAMES.get(code, "UNKNOWN"),
    }
    if details is not None:
        error["details"] = details
    return json.dumps({"error": error}, indent=2, ensure_ascii=False).encode("utf-8")


def error_array_body(
    code: int, message: str, status: str | None = None, details: list[JsonObject] | None = None
) -> bytes:
    """The same error as the OpenAI-compatible surface sends it: alone in a JSON array."""
    return b"[" + error_body(code, message, status, details) + b"\n]"


def not_found_model(model: str, version: str, method: str = "generateContent") -> str:
    """The message of a 404 for a model the simulator does not serve (for `method`)."""
    return (
        f"models/{model} is not found for API version {version}, or is not supported for {method}."
    )


def unsupported_method(model: str, method: str) -> str:
    """The message of a 400 for a served model called with a method it does not support."""
    return f"models/{model} is not supported for {method}."


def suspended_message(key_id: str | None) -> str:
    """The message of a 403 for a suspended key, naming the key by its id only."""
    consumer = f"api_key:{key_id}" if key_id else "api_key"
    return f"Permission denied: Consumer '{consumer}' has been suspended."


def quota_error(
    model: str,
    per_day: bool,
    retry_delay: str,
    with_details: bool = True,
    quota_value: int | None = None,
) -> ApiError:
    """A 429 RESOURCE_EXHAUSTED error with QuotaFailure and RetryInfo details."""
    period = "Day" if per_day else "Minute"
    limit = str(quota_value) if quota_value is not None else "250" if per_day else "10"
    message = (
        "You exceeded your current quota, please check your plan and billing details. "
        "For more information on this error, head to: "
        "https://ai.google.dev/gemini-api/docs/rate-limits.\n"
        f"* Quota exceeded for metric: {QUOTA_METRIC}, limit: {limit}, model: {model}\n"
        f"Please retry in {retry_delay}."
    )
    if not with_details:
        return ApiError(429, message)
    details: list[JsonObject] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": QUOTA_METRIC,
                    "quotaId": f"GenerateRequestsPer{period}PerProjectPerModel-FreeTier",
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": limit,
                }
            ],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
    ]
    return ApiError(429, message, details)


def _as_list(value: object) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    return []


def content_text(content: object) -> str:
    """The concatenated text parts of one Content object (anything else yields "")."""
    if not isinstance(content, dict):
        return ""
    texts = [
        part["text"]
        for part in _as_list(content.get("parts"))
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ]
    return "".join(texts)


def count_words(text: str) -> int:
    """Tokens as the simulator counts them: whitespace-separated words, at least 1."""
    return max(1, len(text.split()))


def reply_to(last: str) -> str:
    """The deterministic reply to a conversation whose last prompt text is `last`."""
    return REPLY_PREFIX + last if last else EMPTY_REPLY


def reply_text(request: JsonObject) -> str:
    """The deterministic reply to a GenerateContentRequest."""
    contents = _as_list(request.get("contents"))
    return reply_to(content_text(contents[-1]) if contents else "")


def prompt_tokens(request: JsonObject) -> int:
    """Tokens in the prompt: the words of every content and of the system instruction."""
    texts = [content_text(c) for c in _as_list(request.get("contents"))]
    system = request.get("systemInstruction", request.get("system_instruction"))
    texts.append(content_text(system))
    return count_words(" ".join(texts))


def count_tokens(request: JsonObject) -> int:
    """`totalTokens` for a countTokens request, in either accepted form."""
    inner = request.get("generateContentRequest", request.get("generate_content_request"))
    return prompt_tokens(inner if isinstance(inner, dict) else request)


def response_id() -> str:
    """A random 22-character url-safe response id."""
    return secrets.token_urlsafe(16)


def _usage(prompt: int, candidates: int) -> JsonObject:
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates,
    }


def generate_response(text: str, prompt: int, model: str, rid: str) -> JsonObject:
    """A complete GenerateContentResponse."""
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": _usage(prompt, count_words(text)),
        "modelVersion": model,
        "responseId": rid,
    }


def split_text(text: str, pieces: int) -> list[str]:
    """`text` cut by characters into `pieces` near-equal parts (longer ones first)."""
    base, extra = divmod(len(text), pieces)
    parts: list[str] = []
    start = 0
    for i in range(pieces):
        end = start + base + (1 if i < extra else 0)
        parts.append(text[start:end])
        start = end
    return parts


def stream_chunks(text: str, pieces: int, prompt: int, model: str, rid: str) -> list[JsonObject]:
    """The chunks of a streamed reply; usage is cumulative, only the last one says STOP."""
    chunks: list[JsonObject] = []
    sent = ""
    parts = split_text(text, pieces)
    for i, part in enumerate(parts):
        sent += part
        candidate: JsonObject = {"content": {"role": "model", "parts": [{"text": part}]}}
        if i == len(parts) - 1:
            candidate["finishReason"] = "STOP"
        candidate["index"] = 0
        chunks.append(
            {
                "candidates": [candidate],
                "usageMetadata": _usage(prompt, count_words(sent)),
                "modelVersion": model,
                "responseId": rid,
            }
        )
    return chunks


def display_name(model: str) -> str:
    """ "gemini-3.1-pro-preview" -> "Gemini 3.1 Pro Preview"."""
    return " ".join(word[:1].upper() + word[1:] for word in model.split("-"))


def is_embedding_model(model: str) -> bool:
    """Whether `model` embeds (embedContent) rather than generates (generateContent)."""
    return "embedding" in model


def model_object(model: str) -> JsonObject:
    """The Model resource of one served model."""
    embedding = is_embedding_model(model)
    return {
        "name": f"models/{model}",
        "version": "001",
        "displayName": display_name(model),
        "description": f"{display_name(model)}, served by the L104 Gemini simulator.",
        "inputTokenLimit": EMBEDDING_INPUT_TOKEN_LIMIT if embedding else INPUT_TOKEN_LIMIT,
        "outputTokenLimit": 1 if embedding else OUTPUT_TOKEN_LIMIT,
        "supportedGenerationMethods": (
            ["embedContent", "batchEmbedContents"]
            if embedding
            else ["generateContent", "countTokens"]
        ),
    }
