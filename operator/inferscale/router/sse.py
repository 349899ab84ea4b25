"""Server-sent events: an incremental decoder and an encoder (pure).

The router reads providers' streams event by event (to count usage, to translate Anthropic's
events, to strip a usage chunk the client did not ask for) while engines' streams are relayed
byte for byte without it. :class:`SseDecoder` takes bytes as they arrive, in pieces of any size,
and returns the complete events; a line longer than its bound, or data that is not UTF-8, is a
:class:`MalformedStream` (the caller fails over before the first byte, or ends the client's
stream with an error after it).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_LINE_BYTES: Final = 8 * 1024 * 1024
"""Longest SSE line accepted (a whole chat.completion chunk or Messages event fits easily)."""


class MalformedStream(ValueError):
    """A stream that is not valid server-sent events (or not the events expected)."""


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event: its ``event:`` name (empty when none) and its joined ``data:``."""

    event: str
    data: str


class SseDecoder:
    """Bytes in, complete events out (the WHATWG event-stream rules for ``event`` and ``data``).

    Comments (``:`` lines) and the ``id``/``retry`` fields are skipped; an event with no data is
    not dispatched. Lines end in LF, CRLF or CR.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        """An empty decoder."""
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._max = max_line_bytes

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events that ``chunk`` completes.

        Raises:
            MalformedStream: a line over the bound, or bytes that are not UTF-8.
        """
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[SseEvent] = []
        start = 0
        end = len(buffer)
        while start < end:
            lf = buffer.find(b"\n", start)
            cr = buffer.find(b"\r", start, lf if lf >= 0 else end)
            if cr >= 0:
                if cr == end - 1:
                    break  # a CR at the end may be the first half of CRLF: wait for more
                line_end, next_start = cr, cr + (2 if buffer[cr + 1 : cr + 2] == b"\n" else 1)
            elif lf >= 0:
                line_end, next_start = lf, lf + 1
            else:
                break
            self._line(buffer[start:line_end], events)
            start = next_start
        rest = buffer[start:]
        if len(rest) > self._max:
            raise MalformedStream(f"an event-stream line is longer than {self._max} bytes")
        self._buffer = rest
        return events

    def _line(self, raw: bytes, events: list[SseEvent]) -> None:
        if not raw:
            if self._data:
                events.append(SseEvent(self._event, "\n".join(self._data)))
            self._event, self._data = "", []
            return
        if raw[:1] == b":":
            return
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise MalformedStream("the event stream is not UTF-8") from error
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value

    @property
    def pending(self) -> bool:
        """Whether bytes or fields of an unfinished event are held (a stream cut mid-event)."""
        return bool(self._buffer.strip()) or bool(self._data)


def encode_data(data: bytes) -> bytes:
    """One ``data:`` event (``data`` must hold no newline: JSON from a codec never does)."""
    return b"data: " + data + b"\n\n"


DONE: Final = b"data: [DONE]\n\n"
"""The OpenAI stream's last event."""
