"""The access log's logger: the JSON line it feeds, and nothing built when it is off."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from gunicorn.config import Config

from app.observability.logs import JsonFormatter
from app.workers.access_log import AccessLogger


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _logger(level: int) -> tuple[AccessLogger, _Capture]:
    logger = AccessLogger(Config())
    capture = _Capture()
    logger.access_log.handlers = [capture]
    logger.access_log.setLevel(level)
    return logger, capture


def _access(logger: AccessLogger, headers: Any) -> None:
    resp = SimpleNamespace(status="429 Too Many Requests", headers=headers, sent=123)
    environ = {
        "REMOTE_ADDR": "10.0.0.7",
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/v1beta/models/m:generateContent",
        "QUERY_STRING": "key=client-s3cr3t",
        "HTTP_USER_AGENT": "google-genai-sdk/3.6",
    }
    logger.access(resp, None, environ, timedelta(seconds=1, microseconds=234_567))


def test_one_json_line_with_the_access_fields() -> None:
    logger, capture = _logger(logging.INFO)
    _access(logger, [("Content-Type", "application/json"), ("X-Request-ID", "req-1")])
    (line,) = capture.lines
    entry = json.loads(line)
    assert entry["event"] == "access" and entry["request_id"] == "req-1"
    assert (entry["method"], entry["path"], entry["status"]) == (
        "POST",
        "/v1beta/models/m:generateContent",
        429,
    )
    assert (entry["bytes"], entry["duration_ms"], entry["remote_addr"]) == (123, 1234, "10.0.0.7")
    assert "client-s3cr3t" not in line, "the query string (client keys) is never logged"


def test_off_means_nothing_is_built() -> None:
    """ACCESS_LOG=false sets the access logger to WARNING: not even the headers are read."""
    logger, capture = _logger(logging.WARNING)

    class Untouchable:
        def __iter__(self) -> Any:
            raise AssertionError("headers read although access logging is off")

    _access(logger, Untouchable())
    assert capture.lines == []
