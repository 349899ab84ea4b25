"""SseDecoder: events from bytes in pieces of any size, and what counts as malformed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferscale.router.sse import DONE, MalformedStream, SseDecoder, SseEvent, encode_data

STREAM = (
    b'event: message_start\ndata: {"a": 1}\n\n'
    b": a comment\n"
    b"id: 7\nretry: 100\ndata: first\ndata: second\n\n"
    b"data:no-space\r\n\r\n"
    b"event: lonely\n\n"
    b"data: [DONE]\r\r\n"
)
EVENTS = [
    SseEvent("message_start", '{"a": 1}'),
    SseEvent("", "first\nsecond"),
    SseEvent("", "no-space"),
    SseEvent("", "[DONE]"),
]


def test_whole_stream():
    decoder = SseDecoder()
    assert decoder.feed(STREAM) == EVENTS
    assert not decoder.pending


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_split_gives_the_same_events(cuts):
    decoder = SseDecoder()
    events = []
    bounds = sorted(set(cuts))
    start = 0
    for cut in [*bounds, len(STREAM)]:
        events += decoder.feed(STREAM[start:cut])
        start = cut
    assert events == EVENTS


def test_a_stream_cut_mid_event_is_pending():
    decoder = SseDecoder()
    assert decoder.feed(b"data: half") == []
    assert decoder.pending
    decoder = SseDecoder()
    assert decoder.feed(b"data: x\n") == []
    assert decoder.pending


def test_an_overlong_line_is_malformed():
    with pytest.raises(MalformedStream, match="longer than"):
        SseDecoder(max_line_bytes=16).feed(b"data: " + b"x" * 64)


def test_bytes_that_are_not_utf8_are_malformed():
    with pytest.raises(MalformedStream, match="UTF-8"):
        SseDecoder().feed(b"data: \xff\xfe\n\n")


def test_encode():
    assert encode_data(b'{"x":1}') == b'data: {"x":1}\n\n'
    assert SseDecoder().feed(encode_data(b"[DONE]")) == [SseEvent("", "[DONE]")]
    assert DONE == b"data: [DONE]\n\n"
