"""Per-client rate limits with Flask-Limiter, counted node-wide in the shared state backend."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address

import app.state.sqlite_limits  # noqa: F401  (registers the l104sqlite:// storage scheme)
from app.errors import ApiError, error_response
from app.observability import metrics
from app.settings import Settings


def _refused(limit: RequestLimit) -> Response:
    """Gemini's 429 shape, with Retry-After and RetryInfo for the window's end."""
    metrics.RATE_LIMITED.inc()
    wait = max(1, int(limit.reset_at - time.time() + 0.999))
    return error_response(
        ApiError(
            429,
            f"Rate limit of {limit.limit} exceeded for this client. Retry in {wait}s.",
            details=[
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait}s"}
            ],
            headers={"Retry-After": str(wait)},
        )
    )


def on_redis(storage_uri: str) -> bool:
    """Whether a `limits` storage URI names Redis."""
    return storage_uri.startswith(("redis", "rediss", "unix"))


def redis_options(settings: Settings) -> dict[str, Any]:
    """A Redis `limits` storage's options: the state backend's short timeouts."""
    return {
        "socket_timeout": settings.state_timeout,
        "socket_connect_timeout": settings.state_timeout,
    }


def init_app(app: Flask, settings: Settings, storage_uri: str) -> Limiter:
    """Limit each client (peer address, or X-Forwarded-For from a trusted proxy)."""
    redis = on_redis(storage_uri)  # then per-worker limits while Redis is unreachable
    limiter = Limiter(
        get_remote_address,
        default_limits=[settings.rate_limit] if settings.rate_limit else [],
        storage_uri=storage_uri,
        strategy="fixed-window",
        headers_enabled=True,
        on_breach=_refused,
        key_prefix="l104",
        enabled=bool(settings.rate_limit),
        storage_options=redis_options(settings) if redis else {},
        in_memory_fallback_enabled=redis,
        swallow_errors=True,
    )
    limiter.init_app(app)
    app.extensions["l104.limiter"] = limiter
    return limiter


def reset(limiter: Limiter) -> None:
    """Forget every client's count (healing); nothing to do when limits are off."""
    if limiter.enabled:
        limiter.reset()
