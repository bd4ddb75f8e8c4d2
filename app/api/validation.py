"""Checks on what clients send, so nothing malformed is forwarded upstream."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import current_app, request

from app.errors import ApiError, BadRequest
from app.model_names import InvalidModelName, strip_models_prefix, validate_model_name
from app.settings import Settings

_PAGE_TOKEN = re.compile(r"[A-Za-z0-9._=-]{1,512}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_body() -> tuple[dict[str, Any], bytes]:
    """The request's JSON object and its raw bytes; 415/400 for anything else."""
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise BadRequest(f"Content-Type must be application/json, not {mimetype[:64]}.", code=415)
    raw = request.get_data(cache=False)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body is cut at the limit silently; reading on raises 413 if there is more.
        request.stream.read(1)
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise BadRequest("Invalid JSON payload: the request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("Invalid JSON payload: the request body must be a JSON object.")
    return body, raw


def check_contents(body: dict[str, Any], where: str = "contents") -> None:
    """`contents` must be a non-empty list of objects whose `parts` (if any) is a list."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest(f"Invalid JSON payload: `{where}` must be a non-empty list.")
    for item in contents:
        if not isinstance(item, dict):
            raise BadRequest(f"Invalid JSON payload: every item of `{where}` must be an object.")
        if "parts" in item and not isinstance(item["parts"], list):
            raise BadRequest(f"Invalid JSON payload: `{where}[].parts` must be a list.")


def check_count_tokens(body: dict[str, Any]) -> None:
    """countTokens takes `contents` (google-genai) or `generateContentRequest` (older SDK)."""
    inner = body.get("generateContentRequest")
    if inner is not None:
        if not isinstance(inner, dict):
            raise BadRequest("Invalid JSON payload: `generateContentRequest` must be an object.")
        check_contents(inner, "generateContentRequest.contents")
    else:
        check_contents(body)


MAX_BATCH_EMBEDDINGS = 100  # Gemini's own limit per batchEmbedContents call


def _check_content(content: Any, where: str) -> None:
    if not isinstance(content, dict):
        raise BadRequest(f"Invalid JSON payload: `{where}` must be an object.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise BadRequest(f"Invalid JSON payload: `{where}.parts` must be a non-empty list.")
    if not all(isinstance(part, dict) for part in parts):
        raise BadRequest(f"Invalid JSON payload: every item of `{where}.parts` must be an object.")


def _check_dimensionality(request: dict[str, Any], where: str) -> None:
    value = request.get("outputDimensionality")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise BadRequest(f"Invalid JSON payload: `{where}` must be a positive integer.")


def check_embed_content(body: dict[str, Any]) -> None:
    """embedContent takes one `content` with parts."""
    _check_content(body.get("content"), "content")
    _check_dimensionality(body, "outputDimensionality")


def check_batch_embed(body: dict[str, Any], model: str) -> None:
    """batchEmbedContents: 1 to 100 `requests`, each with content and, if named, this model
    (the path's: one batch is one model's vectors)."""
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise BadRequest("Invalid JSON payload: `requests` must be a non-empty list.")
    if len(requests) > MAX_BATCH_EMBEDDINGS:
        raise BadRequest(f"At most {MAX_BATCH_EMBEDDINGS} requests can be in one batch.")
    for index, item in enumerate(requests):
        where = f"requests[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(f"Invalid JSON payload: `{where}` must be an object.")
        named = item.get("model")
        if named is not None and (
            not isinstance(named, str) or strip_models_prefix(named) != model
        ):
            raise BadRequest(
                f"`{where}.model` must be models/{model}, the model of the request path."
            )
        _check_content(item.get("content"), f"{where}.content")
        _check_dimensionality(item, f"{where}.outputDimensionality")


class ModelNotServed(ApiError):
    """A valid model id that is not among the node's models of its kind."""

    def __init__(self, model: str, served: tuple[str, ...]) -> None:
        super().__init__(
            400, f"Model {model} is not served by this node; it serves: {', '.join(served)}."
        )
        self.model = model


def served_model(path_model: str, kind: str = "generation") -> str:
    """The model id from the path, valid and one the node serves for `kind` (generation:
    GEMINI_MODELS, embedding: EMBEDDING_MODELS, any: either); 400 otherwise."""
    settings: Settings = current_app.config["L104_SETTINGS"]
    try:
        model = validate_model_name(strip_models_prefix(path_model))
    except InvalidModelName as exc:
        raise BadRequest(f"Invalid model name: {exc}.") from None
    served = {
        "generation": settings.gemini_models,
        "embedding": settings.embedding_models,
        "any": settings.served_models,
    }[kind]
    if model not in served and not settings.allow_unlisted_models:
        raise ModelNotServed(model, served)
    return model


def page_params() -> dict[str, str]:
    """The paging parameters of a models listing, checked."""
    params: dict[str, str] = {}
    size = request.args.get("pageSize")
    if size is not None:
        if not size.isdigit() or not 1 <= int(size) <= 1000:
            raise BadRequest("pageSize must be an integer from 1 to 1000.")
        params["pageSize"] = size
    token = request.args.get("pageToken")
    if token:
        if not _PAGE_TOKEN.fullmatch(token):
            raise BadRequest("pageToken is not valid.")
        params["pageToken"] = token
    return params
