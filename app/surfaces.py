"""The APIs the node serves, told apart by path: the `api` label of metrics and logs, and
which wire format an error is rendered in."""

from __future__ import annotations

from contextvars import ContextVar

GEMINI = "gemini"
OPENAI = "openai"
LEGACY = "legacy"  # the original L104 streaming API under /api
NODE = "node"  # the node's own endpoints: /health, /metrics, /self/...
# Gemini's base path of its OpenAI-compatible API, and the alias for tools that append /v1.
OPENAI_PREFIXES = ("/v1beta/openai", "/openai/v1")
_GEMINI_PREFIXES = ("/v1beta/", "/v1/")

current_api: ContextVar[str | None] = ContextVar("l104_api", default=None)


def api_of(path: str) -> str:
    """The API a request path belongs to."""
    for prefix in OPENAI_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return OPENAI
    if path.startswith(_GEMINI_PREFIXES):
        return GEMINI
    return LEGACY if path.startswith("/api/") else NODE
