"""The node's error hierarchy and its one mapping to Gemini-format error responses."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from werkzeug.exceptions import HTTPException

from app.surfaces import api_of

# google.rpc status names for the HTTP codes the node answers with.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    411: "INVALID_ARGUMENT",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ApiError(Exception):
    """An error the client sees as `{"error": {"code", "message", "status"}}`.

    `fail_fast` marks refusals made without calling upstream (open breakers, cooldowns).
    """

    fail_fast = False

    def __init__(
        self,
        code: int,
        message: str,
        *,
        status: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The Gemini error object."""
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class BadRequest(ApiError):
    """The client's request is malformed; it never goes upstream."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(code, message)


class UpstreamError(ApiError):
    """Upstream failed. `retryable` says whether another attempt may succeed."""

    retryable = False

    def __init__(self, code: int, message: str, *, model: str | None = None, **kw: Any) -> None:
        super().__init__(code, message, **kw)
        self.model = model
        self.key_id: str | None = None  # the upstream key's id, for a stream that broke


class UpstreamUnavailable(UpstreamError):
    """Connection failed or reset, or upstream answered 5xx."""

    retryable = True


class UpstreamTimeout(UpstreamError):
    """Upstream did not answer in time."""

    retryable = True

    def __init__(self, message: str = "Upstream did not answer in time.", **kw: Any) -> None:
        super().__init__(504, message, **kw)


class UpstreamStalled(UpstreamTimeout):
    """An attempt produced nothing for the stall timeout; the node closed it."""

    def __init__(
        self, message: str = "Upstream sent nothing for too long; the node gave up.", **kw: Any
    ) -> None:
        super().__init__(message, **kw)


class AttemptCancelled(UpstreamError):
    """Another attempt of the same call answered first; the node closed this one."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(499, "Another attempt of this call answered first.", **kw)


class UpstreamMalformed(UpstreamError):
    """Upstream answered with a body that is not what Gemini sends."""

    retryable = True

    def __init__(self, message: str = "Upstream sent a malformed response.", **kw: Any) -> None:
        super().__init__(502, message, **kw)


class UpstreamRateLimited(UpstreamError):
    """Upstream answered 429; `retry_delay` is RetryInfo's delay in seconds, if any."""

    def __init__(
        self, message: str, *, retry_delay: float | None, per_day: bool, **kw: Any
    ) -> None:
        super().__init__(429, message, **kw)
        self.retry_delay = retry_delay
        self.per_day = per_day


class UpstreamRejected(UpstreamError):
    """Upstream refused the request itself (a 4xx other than 429)."""


class UpstreamKeyRefused(UpstreamRejected):
    """Upstream refused the node's key (400 API_KEY_INVALID, 401, 403 PERMISSION_DENIED):
    the key is taken out of the pool; the client never sees why in terms of a key."""

    def __init__(self, reason: str, **kw: Any) -> None:
        super().__init__(502, "Upstream refused the node's credentials.", **kw)
        self.reason = reason


Renderer = Callable[[ApiError], Response]
# Other wire formats of errors, by API (app.surfaces): the OpenAI-compatible API's own shape.
RENDERERS: dict[str, Renderer] = {}


def error_response(error: ApiError) -> Response:
    """Render `error` in the format of the API the request was made to: Gemini's unless the
    API registered its own in RENDERERS."""
    if has_request_context():
        renderer = RENDERERS.get(api_of(request.path))
        if renderer is not None:
            return renderer(error)
    return gemini_error_response(error)


def gemini_error_response(error: ApiError) -> Response:
    """Render `error` the way Gemini does: 2-space indented JSON."""
    response = Response(
        json.dumps(error.body(), indent=2),
        status=error.code,
        content_type="application/json; charset=UTF-8",
    )
    response.headers.update(error.headers)
    return response


def sse_error_event(error: ApiError) -> bytes:
    """A mid-stream failure as one SSE event, as Gemini sends it."""
    return b"data: " + json.dumps(error.body()).encode() + b"\r\n\r\n"


def init_app(app: Flask) -> None:
    """Answer every error, ours or werkzeug's, in Gemini's format; never with a traceback."""

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        g.l104_fail_fast = error.fail_fast
        request.environ["l104.fail_fast"] = error.fail_fast  # read by gunicorn's post_request
        return error_response(error)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        code = error.code or 500
        message = {
            404: "Method not found.",
            405: "Method not allowed for this path.",
            413: "Request payload size exceeds the limit.",
        }.get(code, error.description or "Request failed.")
        return error_response(ApiError(code, message))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        logging.getLogger("l104.errors").exception(
            "unhandled_error", extra={"event": "unhandled_error"}
        )
        return error_response(ApiError(500, "An internal error has occurred."))
