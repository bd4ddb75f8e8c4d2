"""The OpenAI-compatible API (Gemini's own, mirrored) under `/v1beta/openai` and `/openai/v1`.

Calls go through the same `Gateway` as native ones: retries, breakers, cooldowns read from
the upstream's 429s, deadline and retry budget. Chat rotates across GEMINI_MODELS (the body's
`model` rewritten for each attempt); embeddings never rotate. Errors are answered in OpenAI's
shape (`app.api.openai_wire`).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from functools import partial
from typing import Any

from flask import Blueprint, Response, current_app, g, request, stream_with_context

from app import errors
from app.api import accounting, openai_wire
from app.api.client_auth import require_bearer_key
from app.api.node import STREAM_HEADERS, answer_headers, close_stream, first_event, relay
from app.api.validation import json_body
from app.errors import ApiError
from app.resilience import admission
from app.resilience.gateway import get_gateway
from app.resilience.hedging import STREAM
from app.settings import Settings
from app.surfaces import OPENAI
from app.upstream.client import get_client

bp = Blueprint("openai", __name__)
errors.RENDERERS[OPENAI] = openai_wire.error_response


bp.before_request(require_bearer_key)
bp.before_request(accounting.admit)
bp.after_request(accounting.rate_limit_headers)
bp.teardown_request(accounting.leave)
admission.guard(bp)


def _settings() -> Settings:
    settings: Settings = current_app.config["L104_SETTINGS"]
    return settings


@bp.post("/chat/completions")
def chat_completions() -> Response:
    """A chat completion from the first model that can answer; `stream: true` as SSE."""
    g.l104_endpoint = "chat.completions"
    body, _ = json_body()
    settings = _settings()
    model = openai_wire.model_field(
        body, settings.gemini_models, "chat", settings.allow_unlisted_models
    )
    if openai_wire.check_chat(body):
        return _stream_chat(model, body)
    (parsed, content), answered = _forward("chat/completions", model, body, rotate=True)
    accounting.charge(answered, parsed)
    if "model" not in parsed:
        parsed["model"] = answered
        content = json.dumps(parsed).encode()
    return Response(content, content_type=openai_wire.JSON_TYPE, headers=answer_headers(answered))


def _forward(
    path: str, model: str, body: dict[str, Any], rotate: bool
) -> tuple[tuple[dict[str, Any], bytes], str]:
    """POST `body` to the upstream's `openai/{path}` through the gateway, its `model` set
    to each model tried."""
    client = get_client()
    return get_gateway().call(
        model, lambda m: client.openai_post(path, m, openai_wire.with_model(body, m)), rotate
    )


def _stream_chat(model: str, body: dict[str, object]) -> Response:
    # The usage chunk is asked for upstream always (the client's tokens are charged from
    # it) and passed on only to a client that asked for it.
    wants_usage = openai_wire.wants_usage(body)
    upstream = {**body, "stream_options": {**_options(body), "include_usage": True}}
    (first, events), answered = get_gateway().call(
        model, partial(_open_stream, upstream), kind=STREAM, discard=close_stream
    )
    return Response(
        stream_with_context(_frames(answered, first, events, wants_usage)),
        mimetype="text/event-stream",
        headers={**STREAM_HEADERS, **answer_headers(answered)},
    )


def _open_stream(body: dict[str, object], model: str) -> tuple[bytes, Generator[bytes, None, None]]:
    events = get_client().openai_stream(model, openai_wire.with_model(body, model))
    return first_event(events, model)


def _options(body: dict[str, object]) -> dict[str, object]:
    options = body.get("stream_options")
    return dict(options) if isinstance(options, dict) else {}


def _frames(
    model: str, first: bytes, events: Generator[bytes, None, None], wants_usage: bool = True
) -> Iterator[bytes]:
    try:
        yield openai_wire.frame(first)
        for data in relay(model, events, first):
            if wants_usage or not openai_wire.is_usage_chunk(data):
                yield openai_wire.frame(data)
    except ApiError as error:
        yield openai_wire.error_event(error)
    yield openai_wire.DONE


@bp.post("/embeddings")
def embeddings() -> Response:
    """Embeddings from the requested model only (vectors of two models are not comparable)."""
    g.l104_endpoint = "embeddings"
    body, _ = json_body()
    settings = _settings()
    model = openai_wire.model_field(
        body, settings.embedding_models, "embeddings", settings.allow_unlisted_models
    )
    openai_wire.check_embedding_input(body)
    (_, content), answered = _forward("embeddings", model, body, rotate=False)
    return Response(content, content_type=openai_wire.JSON_TYPE, headers=answer_headers(answered))


@bp.get("/models")
def list_models() -> Response:
    """The upstream's model list, as its OpenAI-compatible API gives it."""
    g.l104_endpoint = "models.list"
    with get_gateway().any_usable_key():
        content = get_client().openai_get("models", None)
    return Response(content, content_type=openai_wire.JSON_TYPE)


@bp.get("/models/<path:model_id>")
def get_model(model_id: str) -> Response:
    """One model, if this node serves it (chat or embeddings); `models/` prefix or not."""
    g.l104_endpoint = "models.get"
    settings = _settings()
    model = openai_wire.model_field(
        {"model": model_id}, settings.served_models, "any call", settings.allow_unlisted_models
    )
    with get_gateway().any_usable_key():
        content = get_client().openai_get(f"models/{model}", model)
    return Response(content, content_type=openai_wire.JSON_TYPE)


@bp.route("/<path:unknown>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def not_found(unknown: str) -> Response:
    """Any other path under the prefix: OpenAI's 404, not Gemini's."""
    g.l104_endpoint = "unmatched"
    raise ApiError(404, f"No such endpoint: {request.method} {request.path[:128]}.")
