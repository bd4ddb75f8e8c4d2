"""JSON logs: one object per line with `ts`, `level`, `event`, `worker_pid`, `request_id`
(and `api` inside a request)."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from app.settings import Settings
from app.surfaces import api_of, current_api

request_id_var: ContextVar[str | None] = ContextVar("l104_request_id", default=None)

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)
_REDACTED = "[REDACTED]"
# Shorter values would redact ordinary words; real keys are far longer.
MIN_REDACTED_LENGTH = 8


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; values in `secrets` are replaced wherever they occur."""

    def __init__(self, secrets: tuple[str, ...] | list[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if len(s) >= MIN_REDACTED_LENGTH)

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object; the record's extra attributes become fields."""
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            return self._finish(access_entry(record))
        message = record.getMessage()
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "event": getattr(record, "event", None) or "log",
            "logger": record.name,
            "worker_pid": record.process,
            "request_id": request_id_var.get(),
        }
        api = current_api.get()
        if api is not None:
            entry["api"] = api
        if message != entry["event"]:
            entry["message"] = message
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self._finish(entry)

    def _finish(self, entry: dict[str, Any]) -> str:
        line = json.dumps(entry, default=str)
        for secret in self.secrets:
            line = line.replace(secret, _REDACTED)
        return line


def access_entry(record: logging.LogRecord) -> dict[str, Any]:
    """gunicorn's access log record as JSON fields. The query string is left out: clients
    may send their key as `?key=`."""
    atoms: Any = record.args
    request_id = atoms["{x-request-id}o"]
    entry = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "event": "access",
        "logger": record.name,
        "worker_pid": record.process,
        "request_id": None if request_id in ("-", "") else request_id,
        "remote_addr": atoms["h"],
        "method": atoms["m"],
        "path": atoms["U"],
        "api": api_of(str(atoms["U"] or "")),
        "status": int(atoms["s"]) if str(atoms["s"]).isdigit() else atoms["s"],
        "bytes": atoms["B"],
        "duration_ms": atoms["M"],
        "user_agent": atoms["a"],
    }
    if atoms.get("{x-l104-hedged}o") == "1":
        entry["hedged"] = True  # the answer came from a hedged attempt
    if atoms.get("{l104.client}e"):
        entry["client"] = atoms["{l104.client}e"]  # its id, never its key
        entry["tokens"] = atoms.get("{l104.tokens}e") or 0
    return entry


def gunicorn_logconfig(settings: Settings) -> dict[str, Any]:
    """`logconfig_dict` for gunicorn: its error and access logs as JSON lines on stderr."""
    formatter = {"()": "app.observability.logs.JsonFormatter", "secrets": settings.secrets}
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": formatter},
        "handlers": {"console": handler, "error_console": handler},
        "root": {"level": settings.log_level, "handlers": []},
        "loggers": {
            "gunicorn.error": {
                "level": settings.log_level,
                "handlers": ["error_console"],
                "propagate": False,
                "qualname": "gunicorn.error",
            },
            "gunicorn.access": {
                "level": "INFO" if settings.access_log else "WARNING",
                "handlers": ["console"],
                "propagate": False,
                "qualname": "gunicorn.access",
            },
        },
    }


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


def init_app(app: Any, settings: Settings) -> None:
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
    if not settings.node_api_keys and not settings.clients_file:
        log_event(
            log,
            "node_open",
            logging.WARNING,
            hint="NODE_API_KEYS and CLIENTS_FILE are unset: any client can use this node",
        )
