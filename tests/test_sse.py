"""SSE parsing and framing."""

from __future__ import annotations

from app.upstream.sse import frame, iter_event_data, text_event


def test_events_split_across_reads_and_separators() -> None:
    chunks = [b'data: {"a":1}\r', b'\n\r\ndata: {"b"', b":2}\n\n", b"\r\n", b'data: {"c":3}']
    assert list(iter_event_data(chunks)) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_events_yield_before_the_stream_ends() -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'data: {"a":1}\r\n\r\n'
        raise AssertionError("read past the first event")

    events = iter_event_data(chunks())
    assert next(events) == b'{"a":1}'


def test_multi_line_data_and_non_data_fields() -> None:
    assert list(iter_event_data([b"event: x\nid: 1\ndata: a\ndata:b\n\n"])) == [b"a\nb"]


def test_frame_and_text_event() -> None:
    assert frame(b'{"a":1}') == b'data: {"a":1}\r\n\r\n'
    assert text_event("one\ntwo\r\nthree") == b"data: one\ndata: two\ndata: three\n\n"
