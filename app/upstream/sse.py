"""Server-sent events as Gemini frames them: `data: <json>` lines separated by blank lines."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def iter_event_data(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the data payload of each complete event in a byte stream, as it completes."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while True:
            match = _EVENT_END.search(buffer)
            if match is None:
                break
            event, buffer = buffer[: match.start()], buffer[match.end() :]
            data = _event_data(event)
            if data:
                yield data
    data = _event_data(buffer)
    if data:
        yield data


def _event_data(event: bytes) -> bytes:
    lines = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines).strip()


def frame(data: bytes) -> bytes:
    """One SSE event carrying `data` (a JSON document on one line)."""
    return b"data: " + data + b"\r\n\r\n"


def text_event(text: str) -> bytes:
    """One SSE event carrying arbitrary text; each line becomes its own `data:` field."""
    lines = re.split(r"\r\n|\r|\n", text)
    return "".join(f"data: {line}\n" for line in lines).encode() + b"\n"
