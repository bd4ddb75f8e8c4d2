"""A unary answer assembled from a stream's events (UNARY_AS_STREAM)."""

from __future__ import annotations

from typing import Any

import pytest

from app.errors import UpstreamUnavailable
from app.upstream.assembly import assemble


def _event(*parts: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], **extra}


def test_text_parts_are_joined_and_the_last_event_gives_the_rest() -> None:
    events = [
        _event({"text": "Hel"}, usageMetadata={"totalTokenCount": 5}, modelVersion="m"),
        _event({"text": "lo"}, usageMetadata={"totalTokenCount": 6}, modelVersion="m"),
        _event(
            {"text": "!"}, finish="STOP", usageMetadata={"totalTokenCount": 7}, modelVersion="m"
        ),
    ]
    assert assemble(events) == {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Hello!"}]},
                "index": 0,
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"totalTokenCount": 7},  # cumulative: the last one's
        "modelVersion": "m",
    }


def test_thoughts_calls_and_signed_parts_stay_apart() -> None:
    events = [
        _event({"text": "thinking ", "thought": True}),
        _event({"text": "more", "thought": True}),
        _event({"text": "Answer: "}),
        _event({"text": "42", "thoughtSignature": "sig"}),
        _event({"functionCall": {"name": "f", "args": {}}}, finish="STOP"),
    ]
    parts = assemble(events)["candidates"][0]["content"]["parts"]
    assert parts == [
        {"text": "thinking more", "thought": True},
        {"text": "Answer: "},
        {"text": "42", "thoughtSignature": "sig"},
        {"functionCall": {"name": "f", "args": {}}},
    ]


def test_candidates_by_index_and_the_first_prompt_feedback() -> None:
    first = {
        "candidates": [
            {"content": {"parts": [{"text": "a"}]}, "index": 0},
            {"content": {"parts": [{"text": "b"}]}, "index": 1},
        ],
        "promptFeedback": {"safetyRatings": []},
    }
    last = {
        "candidates": [
            {"content": {"parts": [{"text": "A"}]}, "index": 1, "finishReason": "STOP"},
            {"content": {"parts": [{"text": "B"}]}, "index": 0, "finishReason": "MAX_TOKENS"},
        ]
    }
    answer = assemble([first, last])
    assert [c["content"]["parts"][0]["text"] for c in answer["candidates"]] == ["aB", "bA"]
    assert answer["promptFeedback"] == {"safetyRatings": []}


def test_a_blocked_prompt_is_a_finished_answer() -> None:
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {}}
    assert assemble([blocked]) == blocked


@pytest.mark.parametrize(
    "events",
    [[], [_event({"text": "cut "}), _event({"text": "short"})]],
    ids=["no-event", "no-finish-reason"],
)
def test_a_stream_that_ended_early_is_an_upstream_failure(events: list[dict[str, Any]]) -> None:
    with pytest.raises(UpstreamUnavailable) as caught:
        assemble(events, model="m")
    assert caught.value.retryable and caught.value.model == "m"
