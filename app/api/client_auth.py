"""Client authentication against NODE_API_KEYS (the client's key is never sent upstream)."""

from __future__ import annotations

import hmac

from flask import current_app, request

from app.errors import ApiError
from app.settings import Settings

API_KEY_INVALID = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "l104-node",
    }
]


def presented_key() -> str | None:
    """The key the client sent as `x-goog-api-key` or `?key=`, if any."""
    return request.headers.get("x-goog-api-key") or request.args.get("key")


def key_is_valid(key: str, allowed: tuple[str, ...]) -> bool:
    """Compare against every allowed key in constant time."""
    matched = False
    for candidate in allowed:
        matched |= hmac.compare_digest(key.encode(), candidate.encode())
    return matched


def require_client_key() -> None:
    """Blueprint guard: answers like Gemini (403 without a key, 400 with a wrong one)."""
    settings: Settings = current_app.config["L104_SETTINGS"]
    if not settings.node_api_keys:
        return
    key = presented_key()
    if not key:
        raise ApiError(
            403,
            "Method doesn't allow unregistered callers. Send a node API key as "
            "x-goog-api-key or ?key=.",
        )
    if not key_is_valid(key, settings.node_api_keys):
        raise ApiError(
            400, "API key not valid. Please pass a valid API key.", details=API_KEY_INVALID
        )
