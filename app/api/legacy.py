"""The original L104 node's streaming API: `POST /api/v6/stream` and `POST /api/stream`."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from functools import partial
from typing import Any

from flask import Blueprint, Response, stream_with_context

from app.api import accounting
from app.api.client_auth import require_client_key
from app.api.node import close_stream, open_stream, relay
from app.api.validation import json_body
from app.errors import ApiError, BadRequest
from app.resilience import admission
from app.resilience.gateway import get_gateway
from app.resilience.hedging import STREAM
from app.upstream import sse

bp = Blueprint("legacy", __name__, url_prefix="/api")
bp.before_request(require_client_key)
bp.before_request(accounting.admit)
bp.after_request(accounting.rate_limit_headers)
bp.teardown_request(accounting.leave)
admission.guard(bp)


@bp.post("/v6/stream")
@bp.post("/stream")
def stream() -> Response:
    """Take `{"signal": text}` or `{"message": text}`; stream the answer's text as SSE."""
    body, _ = json_body()
    text = body.get("signal", body.get("message"))
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("Send a non-empty string as `signal` or `message`.")
    prompt = json.dumps({"contents": [{"role": "user", "parts": [{"text": text}]}]}).encode()
    (first, events), model = get_gateway().call(
        None, partial(open_stream, prompt), kind=STREAM, discard=close_stream
    )
    return Response(
        stream_with_context(_text_events(model, first, events)),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-L104-Model": model},
    )


def _text_events(model: str, first: bytes, events: Generator[bytes, None, None]) -> Iterator[bytes]:
    try:
        yield from _chunk_text(first)
        for data in relay(model, events, first):
            yield from _chunk_text(data)
    except ApiError as error:
        yield b"event: error\n" + sse.text_event(json.dumps(error.body()))


def _chunk_text(data: bytes) -> Iterator[bytes]:
    chunk: Any = json.loads(data)
    for candidate in chunk.get("candidates") or []:
        for part in (candidate.get("content") or {}).get("parts") or []:
            text = part.get("text")
            if isinstance(text, str) and text and not part.get("thought"):
                yield sse.text_event(text)
