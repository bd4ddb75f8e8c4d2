"""The error a call ends with; the handler writes it in its surface's body form."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Stop answering a call with a Gemini error (`google.rpc.Status` fields)."""

    def __init__(
        self, code: int, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
