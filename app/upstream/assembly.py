"""A unary answer assembled from the events of an upstream stream.

The node may ask Gemini for `streamGenerateContent` when its client asked for
`generateContent` (UNARY_AS_STREAM): a stream says early that the model is answering (its
first event) and keeps saying it while the answer is written, which a unary call does not,
so that hedging and stall detection can tell a long answer from a hung one. The client gets
the one GenerateContentResponse it asked for:
- each candidate (by `index`) gets the parts of every event in order, consecutive plain text
  parts (same `thought` flag, nothing else on them) joined into one, as in a unary answer;
- a candidate's other fields (`finishReason`, `safetyRatings`, `citationMetadata`,
  `groundingMetadata`, ...) and the answer's (`usageMetadata`, which is cumulative,
  `modelVersion`, `responseId`) are the latest event's; `promptFeedback` the first seen;
- a stream whose last event finishes no candidate (no `finishReason`, no prompt block) ended
  early: that is an upstream failure, never a shortened answer.
"""

from __future__ import annotations

from typing import Any

from app.errors import UpstreamUnavailable

_TEXT_KEYS = frozenset({"text", "thought"})


def assemble(events: list[dict[str, Any]], model: str | None = None) -> dict[str, Any]:
    """One GenerateContentResponse from a stream's events (see the module docstring)."""
    if not events:
        raise UpstreamUnavailable(503, "Upstream ended the stream without an event.", model=model)
    answer: dict[str, Any] = {}
    candidates: dict[int, dict[str, Any]] = {}
    for event in events:
        for name, value in event.items():
            if name == "candidates":
                for candidate in value or ():
                    _merge_candidate(candidates, candidate)
            elif name != "promptFeedback" or name not in answer:
                answer[name] = value
    if candidates:
        answer = {"candidates": [candidates[i] for i in sorted(candidates)], **answer}
    if not _finished(events[-1], candidates):
        raise UpstreamUnavailable(503, "Upstream ended the stream early.", model=model)
    return answer


def _merge_candidate(candidates: dict[int, dict[str, Any]], candidate: dict[str, Any]) -> None:
    index = candidate.get("index", 0)
    merged = candidates.setdefault(index if isinstance(index, int) else 0, {})
    for name, value in candidate.items():
        if name != "content" or not isinstance(value, dict):
            merged[name] = value
            continue
        content = merged.setdefault("content", {})
        for field, item in value.items():
            if field == "parts" and isinstance(item, list):
                _merge_parts(content.setdefault("parts", []), item)
            else:
                content[field] = item


def _merge_parts(parts: list[Any], new: list[Any]) -> None:
    for part in new:
        last: Any = parts[-1] if parts else None
        if _plain_text(last) and _plain_text(part) and last.get("thought") == part.get("thought"):
            last["text"] += part["text"]
        else:
            parts.append(dict(part) if isinstance(part, dict) else part)


def _plain_text(part: Any) -> bool:
    return isinstance(part, dict) and isinstance(part.get("text"), str) and set(part) <= _TEXT_KEYS


def _finished(last: dict[str, Any], candidates: dict[int, dict[str, Any]]) -> bool:
    feedback = last.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        return True
    return bool(candidates) and all(c.get("finishReason") for c in candidates.values())
