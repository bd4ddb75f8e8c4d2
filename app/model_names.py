"""Model names: what a client may put in a path, so that it can never change the upstream path."""

from __future__ import annotations

import re

MAX_MODEL_NAME = 128
_MODEL_NAME = re.compile(r"[a-z0-9](?:[a-z0-9_-]|\.(?!\.))*", re.IGNORECASE)


class InvalidModelName(ValueError):
    """The text cannot be a Gemini model id."""


def validate_model_name(name: str) -> str:
    """Return `name` if it is a plain model id (letters, digits, `-`, `_`, single dots)."""
    if not name:
        raise InvalidModelName("model name is empty")
    if len(name) > MAX_MODEL_NAME:
        raise InvalidModelName(f"model name is longer than {MAX_MODEL_NAME} characters")
    if not _MODEL_NAME.fullmatch(name):
        raise InvalidModelName("model name may hold only letters, digits, '-', '_' and single dots")
    return name


def strip_models_prefix(name: str) -> str:
    """`models/gemini-x` -> `gemini-x` (clients and SDKs send both forms)."""
    return name[len("models/") :] if name.startswith("models/") else name
