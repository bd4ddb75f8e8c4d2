"""Per-request bookkeeping: the request id (echoed back) and the request count."""

from __future__ import annotations

import itertools
import re
import time
import uuid

from flask import Flask, Response, g, request

from app.logs import request_id_var

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestCounter:
    """Counts requests served by this process (thread-safe under the GIL)."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self.total = 0
        self.started = time.monotonic()

    def increment(self) -> None:
        """Count one request."""
        self.total = next(self._counter)


def init_app(app: Flask) -> None:
    """Give each request an id (the client's X-Request-ID if it is sane) and count it."""
    counter = RequestCounter()
    app.extensions["l104.requests"] = counter

    @app.before_request
    def _start() -> None:
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = supplied if _VALID_REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
        g.request_id = request_id
        request_id_var.set(request_id)
        counter.increment()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
        return response
