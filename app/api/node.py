"""The Gemini-compatible API, on both `/v1beta` and `/v1`."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from functools import partial

from flask import Blueprint, Response, g, request, stream_with_context

from app.api import accounting
from app.api.client_auth import require_client_key
from app.api.validation import (
    ModelNotServed,
    check_batch_embed,
    check_contents,
    check_count_tokens,
    check_embed_content,
    json_body,
    page_params,
    served_model,
)
from app.errors import ApiError, BadRequest, UpstreamError, UpstreamMalformed, sse_error_event
from app.resilience import admission
from app.resilience.gateway import get_gateway
from app.resilience.hedging import COUNT, STREAM
from app.resilience.race import answered_by_hedge
from app.upstream import sse
from app.upstream.client import get_client

bp = Blueprint("node", __name__)
bp.before_request(require_client_key)
bp.before_request(accounting.admit)
bp.after_request(accounting.rate_limit_headers)
bp.teardown_request(accounting.leave)
admission.guard(bp)

MODEL_HEADER = "X-L104-Model"
HEDGED_HEADER = "X-L104-Hedged"  # "1" when a hedged attempt gave the answer
JSON_TYPE = "application/json; charset=UTF-8"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_VERSIONS = "<any(v1, v1beta):version>"


@bp.post(f"/{_VERSIONS}/models/<path:target>")
def call_model(version: str, target: str) -> Response:
    """`models/{model}:{method}`: generateContent, streamGenerateContent, countTokens,
    embedContent and batchEmbedContents."""
    path_model, colon, method = target.rpartition(":")
    if not colon:
        raise ApiError(405, f"POST needs one of :{', :'.join(_METHODS)}.")
    handler = _METHODS.get(method)
    g.l104_endpoint = method if handler else None
    if handler is None:
        raise ApiError(404, f"Method not found: {method[:64]}.")
    kind = "embedding" if method in _EMBED_METHODS else "generation"
    return handler(served_model(path_model, kind))


def generate_content(model: str) -> Response:
    """Answer one generateContent call from the first model that can."""
    body, raw = json_body()
    check_contents(body)
    client = get_client()
    (parsed, content), answered = get_gateway().call(model, lambda m: client.generate(m, raw))
    accounting.charge(answered, parsed)
    if "modelVersion" not in parsed:
        parsed["modelVersion"] = answered
        content = json.dumps(parsed).encode()
    return Response(content, content_type=JSON_TYPE, headers=answer_headers(answered))


def stream_generate_content(model: str) -> Response:
    """Stream as SSE (`alt=sse`) or as one JSON array, passing chunks on as they arrive."""
    alt = request.args.get("alt")
    if alt not in (None, "sse", "json"):
        raise BadRequest("alt must be sse or json.")
    body, raw = json_body()
    check_contents(body)
    (first, events), answered = get_gateway().call(
        model, partial(open_stream, raw), kind=STREAM, discard=close_stream
    )
    framing = _sse_frames if alt == "sse" else _array_frames
    mimetype = "text/event-stream" if alt == "sse" else "application/json"
    return Response(
        stream_with_context(framing(answered, first, events)),
        mimetype=mimetype,
        headers={**STREAM_HEADERS, **answer_headers(answered)},
    )


def open_stream(raw: bytes, model: str) -> tuple[bytes, Generator[bytes, None, None]]:
    """Start an upstream stream and read its first event (see `first_event`)."""
    return first_event(get_client().stream(model, raw), model)


def answer_headers(answered: str) -> dict[str, str]:
    """The headers that say which model answered, and whether a hedge did."""
    if answered_by_hedge.get():
        return {MODEL_HEADER: answered, HEDGED_HEADER: "1"}
    return {MODEL_HEADER: answered}


def close_stream(opened: tuple[bytes, Generator[bytes, None, None]]) -> None:
    """Release a stream that lost a hedged race (its connection is closed)."""
    opened[1].close()


def first_event(
    events: Generator[bytes, None, None], model: str
) -> tuple[bytes, Generator[bytes, None, None]]:
    """Read a new upstream stream's first event, so that a failure before the first byte
    reaches the client can still be retried on this or another model."""
    try:
        return next(events), events
    except StopIteration:
        raise UpstreamMalformed("Upstream ended the stream without a chunk.", model=model) from None
    except BaseException:
        events.close()
        raise


def relay(
    model: str, events: Generator[bytes, None, None], first: bytes | None = None
) -> Iterator[bytes]:
    """The rest of an upstream stream; a later failure is counted, then re-raised. The
    client is charged from the last event (its usage is cumulative)."""
    last = first
    try:
        for data in events:
            last = data
            yield data
    except UpstreamError as error:
        get_gateway().record_stream_failure(model, error)
        raise
    finally:
        events.close()
        accounting.charge_event(model, last)


def _sse_frames(model: str, first: bytes, events: Generator[bytes, None, None]) -> Iterator[bytes]:
    try:
        yield sse.frame(first)
        for data in relay(model, events, first):
            yield sse.frame(data)
    except ApiError as error:
        yield sse_error_event(error)


def _array_frames(
    model: str, first: bytes, events: Generator[bytes, None, None]
) -> Iterator[bytes]:
    try:
        yield b"[" + first
        for data in relay(model, events, first):
            yield b",\r\n" + data
    except ApiError as error:
        yield b",\r\n" + json.dumps(error.body()).encode()
    yield b"]"


def count_tokens(model: str) -> Response:
    """Forward a countTokens call."""
    body, raw = json_body()
    check_count_tokens(body)
    client = get_client()
    content, answered = get_gateway().call(model, lambda m: client.count_tokens(m, raw), kind=COUNT)
    return Response(content, content_type=JSON_TYPE, headers=answer_headers(answered))


def embed_content(model: str) -> Response:
    """One embedContent call, on the requested model only (no rotation: vectors of two
    models are not comparable)."""
    body, raw = json_body()
    check_embed_content(body)
    return _embed(model, "embedContent", raw)


def batch_embed_contents(model: str) -> Response:
    """A batchEmbedContents call (google-genai's embed_content), on the requested model only."""
    body, raw = json_body()
    check_batch_embed(body, model)
    return _embed(model, "batchEmbedContents", raw)


def _embed(model: str, method: str, raw: bytes) -> Response:
    client = get_client()
    content, answered = get_gateway().call(
        model, lambda m: client.embed(m, method, raw), rotate=False
    )
    return Response(content, content_type=JSON_TYPE, headers=answer_headers(answered))


_METHODS = {
    "generateContent": generate_content,
    "streamGenerateContent": stream_generate_content,
    "countTokens": count_tokens,
    "embedContent": embed_content,
    "batchEmbedContents": batch_embed_contents,
}
_EMBED_METHODS = frozenset({"embedContent", "batchEmbedContents"})


@bp.get(f"/{_VERSIONS}/models")
def list_models(version: str) -> Response:
    """Upstream's model list, paged as the client asks."""
    params = page_params()
    with get_gateway().any_usable_key():
        return Response(get_client().list_models(params), content_type=JSON_TYPE)


@bp.get(f"/{_VERSIONS}/models/<path:model>")
def get_model(version: str, model: str) -> Response:
    """One model's description, for models this node serves."""
    if ":" in model:
        raise ApiError(405, "Use POST for model methods.")
    try:
        name = served_model(model, "any")
    except ModelNotServed as error:
        raise ApiError(404, f"models/{error.model} is not found on this node.") from None
    with get_gateway().any_usable_key():
        return Response(get_client().get_model(name), content_type=JSON_TYPE)
