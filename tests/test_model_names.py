"""Model names can never change the upstream path."""

from __future__ import annotations

import pytest

from app.model_names import InvalidModelName, strip_models_prefix, validate_model_name


@pytest.mark.parametrize(
    "name", ["gemini-3.8-flash", "gemini-2.5-flash-lite", "gemini-3.1-pro-preview", "a_b.c"]
)
def test_plain_ids_pass(name: str) -> None:
    assert validate_model_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        "../x",
        "a/../b",
        "a..b",
        ".hidden",
        "a/b",
        "a?b",
        "a#b",
        "a b",
        "a%2e",
        "a:b",
        "é",
        "x" * 129,
        "a\nb",
        "a\x00b",
    ],
)
def test_anything_else_is_refused(name: str) -> None:
    with pytest.raises(InvalidModelName):
        validate_model_name(name)


def test_models_prefix_is_stripped_once() -> None:
    assert strip_models_prefix("models/gemini-x") == "gemini-x"
    assert strip_models_prefix("gemini-x") == "gemini-x"
    assert strip_models_prefix("models/models/x") == "models/x"
