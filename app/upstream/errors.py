"""Turning an upstream Gemini error answer into the node's `UpstreamError`s."""

from __future__ import annotations

import json
import re
from typing import Any

from app.errors import (
    UpstreamError,
    UpstreamKeyRefused,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


def parse_error_body(content: bytes) -> dict[str, Any]:
    """The `error` object of a Gemini error body, or {} when there is none. Gemini's
    OpenAI-compatible API sends the same object inside a JSON array: `[{"error": {...}}]`."""
    try:
        body = json.loads(content)
    except ValueError:
        return {}
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def retry_delay_seconds(details: list[Any]) -> float | None:
    """`RetryInfo.retryDelay` ("26s", "45.83s") in seconds, or None."""
    for detail in details:
        if isinstance(detail, dict) and detail.get("@type") == RETRY_INFO:
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def is_per_day_quota(details: list[Any]) -> bool:
    """True when a QuotaFailure names a per-day quota: the model is done for the day."""
    for detail in details:
        if isinstance(detail, dict) and detail.get("@type") == QUOTA_FAILURE:
            for violation in detail.get("violations") or []:
                if isinstance(violation, dict) and "PerDay" in str(violation.get("quotaId", "")):
                    return True
    return False


def _error_reason(details: list[Any]) -> str:
    for detail in details:
        if isinstance(detail, dict) and detail.get("@type") == ERROR_INFO:
            return str(detail.get("reason", ""))
    return ""


def error_from_response(status_code: int, content: bytes, model: str | None) -> UpstreamError:
    """Map one upstream error answer to what the node raises (and the client may see)."""
    error = parse_error_body(content)
    message = str(error.get("message") or f"Upstream answered HTTP {status_code}.")
    details = error.get("details")
    details = [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []
    if status_code == 429:
        return UpstreamRateLimited(
            message,
            retry_delay=retry_delay_seconds(details),
            per_day=is_per_day_quota(details),
            model=model,
            details=details,
        )
    reason = _error_reason(details)
    if status_code in (401, 403) or reason == "API_KEY_INVALID":
        # The node's own credentials were refused: not the client's fault, not its business.
        status = error.get("status")
        why = reason or (status if isinstance(status, str) else "") or f"HTTP {status_code}"
        return UpstreamKeyRefused(why, model=model)
    if 400 <= status_code < 500:
        status = error.get("status")
        return UpstreamRejected(
            status_code, message, model=model, status=status if isinstance(status, str) else None
        )
    code = status_code if status_code in (500, 502, 503, 504) else 502
    return UpstreamUnavailable(code, message, model=model)
