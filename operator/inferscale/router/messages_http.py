"""The Messages API's HTTP side: the pipeline's OpenAI answers written as Anthropic's.

A Messages request runs through the same stages as an OpenAI one
(:mod:`inferscale.router.stages.parse_messages` translates it); what they answer is translated
back here, at the edge:

- a stream through :class:`MessagesStream`, a stream response whose writes take OpenAI SSE
  bytes (engine chunks, the router's own error events, a held stream's keep-alive comments) and
  send Messages events (:class:`inferscale.router.messages.EventTranslator`); the upstream
  bytes, and so the accounting of their usage, are untouched;
- a whole answer by :func:`messages_answer`: a chat completion becomes a Messages response (or
  its events, for a stream request that got JSON), an error of any stage becomes Anthropic's
  error object with the same status (``Retry-After`` and the other headers kept).

An engine answer that does not translate (not a chat completion) is 502, never a 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aiohttp import web

from inferscale.router.access import Refusal
from inferscale.router.codec import JSON, dumps, loads
from inferscale.router.messages import (
    PING,
    EventTranslator,
    MessagesError,
    chat_to_message,
    error_body,
    event,
)
from inferscale.router.sse import MalformedStream, SseDecoder
from inferscale.router.stages.authenticate import refusal_response

_DROPPED_HEADERS: Final = frozenset({"content-type", "content-length"})
SSE: Final = "text/event-stream"


class MessagesDialect:
    """How answers to one Messages request are written (a :class:`~.context.Dialect`)."""

    __slots__ = ("model", "sequences")

    def __init__(self, model: str, sequences: tuple[str, ...]) -> None:
        """Answers to a request for ``model`` that set these ``stop_sequences``."""
        self.model = model
        self.sequences = sequences

    def stream(self, status: int, headers: Mapping[str, str]) -> web.StreamResponse:
        """The translating stream response."""
        return MessagesStream(EventTranslator(self.model, self.sequences), status, headers)


class MessagesStream(web.StreamResponse):
    """A stream response that is written OpenAI SSE bytes and sends Messages events."""

    def __init__(
        self, translator: EventTranslator, status: int, headers: Mapping[str, str]
    ) -> None:
        """Translate with ``translator``."""
        super().__init__(status=status, headers={**headers, "Content-Type": SSE})
        self.translator = translator
        self.decoder = SseDecoder()

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send what ``data`` (OpenAI SSE bytes, in pieces of any size) makes."""
        out = self.translate(bytes(data))
        if out:
            await super().write(out)

    def translate(self, data: bytes) -> bytes:
        """The Messages events that ``data`` completes."""
        translator = self.translator
        if translator.finished:
            return b""
        try:
            events = self.decoder.feed(data)
        except MalformedStream as error:
            return self._fail(f"the engine's stream is malformed: {error}")
        if not events and data.startswith(b":"):
            return PING  # a keep-alive while held: Anthropic's own keep-alive event
        out: list[bytes] = []
        for sse in events:
            if sse.data == "[DONE]":
                out += translator.done()
                continue
            try:
                out += translator.feed(loads(sse.data))
            except (ValueError, RecursionError):
                out.append(self._fail("the engine sent an event that is not JSON"))
                break
        return b"".join(out)

    def _fail(self, message: str) -> bytes:
        self.translator.finished = True
        return event("error", {"type": "error", "error": {"type": "api_error", "message": message}})


def messages_answer(
    resp: web.StreamResponse, dialect: MessagesDialect | None
) -> web.StreamResponse:
    """The pipeline's answer ``resp`` for a Messages client (a stream is already translated)."""
    if resp.prepared or not isinstance(resp, web.Response):
        return resp
    status = resp.status
    body = resp.body if isinstance(resp.body, bytes) else b""
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in _DROPPED_HEADERS}
    if status >= 400 or dialect is None:
        return _json(status, dumps(error_body(status, body)), headers)
    try:
        doc = loads(body)
        if resp.content_type == SSE or not isinstance(doc, dict):
            raise MessagesError("the engine's answer is not a chat completion")
        if not (doc.get("object") == "chat.completion" or "choices" in doc):
            raise MessagesError("the engine's answer is not a chat completion")
        message = chat_to_message(doc, dialect.model, dialect.sequences)
    except (ValueError, RecursionError) as error:
        text = error.message if isinstance(error, MessagesError) else "invalid JSON"
        failure = {"type": "error", "error": {"type": "api_error", "message": text}}
        return _json(502, dumps(failure), headers)
    return _json(status, dumps(message), headers)


def stream_answer(resp: web.StreamResponse, dialect: MessagesDialect) -> web.StreamResponse:
    """A whole 2xx answer to a stream request, as the events of a Messages stream."""
    if resp.prepared or not isinstance(resp, web.Response) or resp.status >= 400:
        return messages_answer(resp, dialect)
    body = resp.body if isinstance(resp.body, bytes) else b""
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in _DROPPED_HEADERS}
    translator = EventTranslator(dialect.model, dialect.sequences)
    try:
        events = translator.feed(loads(body))
    except (ValueError, RecursionError):
        failure = {"type": "error", "error": {"type": "api_error", "message": "invalid JSON"}}
        return _json(502, dumps(failure), headers)
    return web.Response(
        status=resp.status, body=b"".join(events), headers={**headers, "Content-Type": SSE}
    )


def messages_refusal(refusal: Refusal) -> web.StreamResponse:
    """An access refusal (401, 403, 429) in Anthropic's error shape, headers kept."""
    return messages_answer(refusal_response(refusal), None)


def _json(status: int, body: bytes, headers: Mapping[str, str]) -> web.Response:
    return web.Response(status=status, body=body, headers={**headers, "Content-Type": JSON})
