"""Per-request bookkeeping: the request id (echoed back) and the request count."""

from __future__ import annotations

import itertools
import re
import time
import uuid

from flask import Flask, Response, g, request

from app.observability import metrics
from app.observability.logs import request_id_var
from app.surfaces import NODE, api_of, current_api

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestCounter:
    """This worker's requests: the total, those in flight, and errors since last asked."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self.total = 0
        self.started = time.monotonic()
        self.in_flight: dict[int, float] = {}
        self.window_requests = 0
        self.window_errors = 0

    def increment(self) -> None:
        """Count one request."""
        self.total = next(self._counter)

    def begin(self, key: int) -> None:
        """A request started."""
        self.in_flight[key] = time.monotonic()

    def end(self, key: int) -> None:
        """A request ended (its whole body was sent)."""
        self.in_flight.pop(key, None)

    def record(self, status: int) -> None:
        """Count an answered status for the error rate; 5xx is an error."""
        self.window_requests += 1
        self.window_errors += status >= 500

    def oldest_in_flight(self) -> float:
        """Age in seconds of the oldest request still running (0 if none)."""
        starts = list(self.in_flight.values())
        return time.monotonic() - min(starts) if starts else 0.0

    def take_window(self) -> tuple[int, int]:
        """Requests and errors since the last call, and start a new window."""
        window = (self.window_requests, self.window_errors)
        self.window_requests = self.window_errors = 0
        return window


def init_app(app: Flask) -> None:
    """Give each request an id (the client's X-Request-ID if it is sane) and count it."""
    counter = RequestCounter()
    app.extensions["l104.requests"] = counter

    @app.before_request
    def _start() -> None:
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = supplied if _VALID_REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
        g.request_id = request_id
        g.l104_started = time.perf_counter()
        request_id_var.set(request_id)
        current_api.set(api_of(request.path))
        counter.increment()
        counter.begin(id(request._get_current_object()))  # type: ignore[attr-defined]
        metrics.IN_FLIGHT.inc()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
        endpoint = endpoint_label()
        api = current_api.get() or NODE
        metrics.REQUESTS.labels(api, endpoint, str(response.status_code)).inc()
        if not g.get("l104_fail_fast"):
            counter.record(response.status_code)
        started = g.get("l104_started")
        if started is not None:
            metrics.REQUEST_SECONDS.labels(api, endpoint).observe(time.perf_counter() - started)
        return response

    @app.teardown_request
    def _done(error: BaseException | None) -> None:
        # Runs after a streamed body is sent, so in-flight covers whole streams.
        if g.get("l104_started") is not None:
            metrics.IN_FLIGHT.dec()
            counter.end(id(request._get_current_object()))  # type: ignore[attr-defined]
        request_id_var.set(None)
        current_api.set(None)


def endpoint_label() -> str:
    """A bounded name for the endpoint (`generateContent`, `ops.health`, `unmatched`)."""
    return str(g.get("l104_endpoint") or request.endpoint or "unmatched")
