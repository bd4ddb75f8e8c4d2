"""Embeddings: deterministic vectors, and native embedContent / batchEmbedContents bodies."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

from app.simulator.errors import ApiError

DEFAULT_DIMENSIONS = 768
MAX_DIMENSIONS = 3072
MAX_BATCH = 100
TASK_TYPES = frozenset(
    {
        "TASK_TYPE_UNSPECIFIED",
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    }
)


def vector(model: str, text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The unit vector of `text` in `model`'s space: float32 values, the same on every call.

    A shorter vector is the longer one cut and renormalised, as with Matryoshka embeddings.
    """
    seed = model.encode() + b"\0" + text.encode()
    raw = struct.unpack(f"<{dimensions}i", hashlib.shake_256(seed).digest(4 * dimensions))
    norm = math.sqrt(math.fsum(float(x) * x for x in raw)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(x / norm for x in raw))
    return list(struct.unpack(f"<{dimensions}f", packed))


def to_base64(values: list[float]) -> str:
    """`values` as OpenAI's base64 encoding: little-endian float32, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def dimensions(value: object, field: str) -> int:
    """A requested vector size (None: the default), or a 400."""
    if value is None:
        return DEFAULT_DIMENSIONS
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{field} must be an integer.")
    if not 1 <= value <= MAX_DIMENSIONS:
        raise ApiError(400, f"{field} must be in 1..{MAX_DIMENSIONS}, got {value}.")
    return value


def _text(content: object, where: str) -> str:
    if not isinstance(content, dict):
        raise ApiError(400, f"* {where}.content: content is not specified")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise ApiError(400, f"* {where}.content.parts: contents.parts must not be empty.")
    texts: list[str] = []
    for index, part in enumerate(parts):
        text = part.get("text") if isinstance(part, dict) else None
        if not isinstance(text, str) or not text:
            # proto3: an empty text is no data at all
            raise ApiError(
                400,
                f"* {where}.content.parts[{index}].data: "
                "required oneof field 'data' must have one initialized field",
            )
        texts.append(text)
    return "".join(texts)


def _request(body: dict[str, Any], where: str) -> tuple[str, int]:
    task = body.get("taskType", body.get("task_type"))
    if task is not None and task not in TASK_TYPES:
        raise ApiError(400, f"Invalid value at '{where}.task_type', {task!r}.")
    size = body.get("outputDimensionality", body.get("output_dimensionality"))
    return _text(body.get("content"), where), dimensions(size, f"{where}.outputDimensionality")


def embed_response(model: str, body: dict[str, Any]) -> dict[str, Any]:
    """The answer to an EmbedContentRequest (a 400 ApiError when it is invalid)."""
    text, size = _request(body, "EmbedContentRequest")
    return {"embedding": {"values": vector(model, text, size)}}


def batch_response(model: str, body: dict[str, Any]) -> dict[str, Any]:
    """The answer to a BatchEmbedContentsRequest for `models/{model}` (400 when invalid)."""
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise ApiError(400, "* BatchEmbedContentsRequest.requests: requests must not be empty.")
    if len(requests) > MAX_BATCH:
        raise ApiError(
            400,
            f"* BatchEmbedContentsRequest.requests: at most {MAX_BATCH} requests "
            "can be in one batch.",
        )
    values: list[dict[str, Any]] = []
    for index, request in enumerate(requests):
        where = f"BatchEmbedContentsRequest.requests[{index}]"
        if not isinstance(request, dict):
            raise ApiError(400, f"* {where}: must be an EmbedContentRequest object.")
        named = request.get("model")
        if named != f"models/{model}":
            raise ApiError(
                400,
                f"* {where}.model: {named!r} does not match the model of the URL, "
                f"'models/{model}'.",
            )
        text, size = _request(request, where)
        values.append({"values": vector(model, text, size)})
    return {"embeddings": values}
