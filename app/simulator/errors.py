"""The errors a call or a control request ends with."""

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


class ControlError(ValueError):
    """A `/_sim/` request that cannot be accepted: answered 400 with the message."""
