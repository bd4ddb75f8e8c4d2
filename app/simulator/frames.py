"""Stream framing: native SSE, the native JSON array, and the OpenAI surface's SSE."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from app.simulator.responses import compact
from app.simulator.wire import JSON_TYPE

Framing = Literal["sse", "array", "openai"]

CONTENT_TYPES: dict[Framing, str] = {
    "sse": "text/event-stream",
    "array": JSON_TYPE,
    "openai": "text/event-stream",
}
# What a `malformed` fault sends instead of the stream.
MALFORMED: dict[Framing, bytes] = {
    "sse": b'data: {"candidates": [{"content": \r\n\r\n',
    "array": b'[{"candidates": ',
    "openai": b'data: {"id": "chatcmpl-", "choices": [{"delta": \n\n',
}
# Sent after the last chunk, unless the stream is cut.
END: dict[Framing, bytes] = {"sse": b"", "array": b"", "openai": b"data: [DONE]\n\n"}


def frames(
    chunks: list[dict[str, Any]], framing: Framing, first: bool = True, last: bool = True
) -> Iterable[bytes]:
    """One frame per chunk; `first` and `last` say where the array's brackets go."""
    if framing != "array":
        end = b"\r\n\r\n" if framing == "sse" else b"\n\n"
        for chunk in chunks:
            yield b"data: " + compact(chunk) + end
        return
    close = len(chunks) - 1 if last else -1
    for index, chunk in enumerate(chunks):
        frame = (b"[" if index == 0 and first else b",\r\n") + compact(chunk)
        yield frame + b"]" if index == close else frame


class StampedFrames:
    """The frames of `frames`, each chunk stamped with `simSentAt` (Unix time) as it is
    taken to be written, so a client can tell how long a chunk took to reach it."""

    def __init__(self, chunks: list[dict[str, Any]], framing: Framing) -> None:
        self._chunks = chunks
        self._framing = framing

    def __len__(self) -> int:
        return len(self._chunks)

    def __iter__(self) -> Iterator[bytes]:
        last = len(self._chunks) - 1
        for index, chunk in enumerate(self._chunks):
            stamped = [{**chunk, "simSentAt": round(time.time(), 6)}]
            yield from frames(stamped, self._framing, first=index == 0, last=index == last)
