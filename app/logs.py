"""JSON logs: one object per line with `ts`, `level`, `event`, `worker_pid`, `request_id`."""

from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from flask import Flask

from app.settings import Settings

request_id_var: ContextVar[str | None] = ContextVar("l104_request_id", default=None)

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)
_REDACTED = "[REDACTED]"
# Shorter values would redact ordinary words; real keys are far longer.
MIN_REDACTED_LENGTH = 8


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; values in `secrets` are replaced wherever they occur."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if len(s) >= MIN_REDACTED_LENGTH)

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object; the record's extra attributes become fields."""
        message = record.getMessage()
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "event": getattr(record, "event", None) or message,
            "logger": record.name,
            "worker_pid": record.process,
            "request_id": request_id_var.get(),
        }
        if message != entry["event"]:
            entry["message"] = message
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        line = json.dumps(entry, default=str)
        for secret in self.secrets:
            line = line.replace(secret, _REDACTED)
        return line


def log_event(
    logger: logging.Logger, event: str, severity: int = logging.INFO, **fields: Any
) -> None:
    """Log one tagged event (`circuit_breaker_open`, ...) with its fields."""
    logger.log(severity, event, extra={"event": event, **fields})


def configure(level: str, secrets: tuple[str, ...] = ()) -> None:
    """Send the node's `l104.*` loggers to stderr as JSON lines."""
    logger = logging.getLogger("l104")
    logger.setLevel(level)
    logger.propagate = False
    handler = next((h for h in logger.handlers if getattr(h, "l104", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.l104 = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    handler.setFormatter(JsonFormatter(secrets))


def init_app(app: Flask, settings: Settings) -> None:
    """Configure logging for the node and warn about an open node."""
    configure(settings.log_level, settings.secrets)
    log = logging.getLogger("l104.startup")
    log_event(
        log,
        "node_configured",
        upstream=settings.upstream_kind,
        upstream_base=settings.gemini_api_base,
        models=list(settings.gemini_models),
        pid=os.getpid(),
    )
    if not settings.node_api_keys:
        log_event(
            log,
            "node_open",
            logging.WARNING,
            hint="NODE_API_KEYS is unset: any client can use this node",
        )
