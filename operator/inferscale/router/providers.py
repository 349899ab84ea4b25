"""The router's client side to hosted providers: one HTTP call, whatever the provider's API.

:func:`call` sends one OpenAI request (``/v1/chat/completions``, ``/v1/completions`` or
``/v1/embeddings``) to a provider model and returns an :class:`Answer` (a whole body) or a
:class:`Stream` (its first chunks already read, the rest as they come), both in the OpenAI
shape the client asked for:

- ``openai`` and ``openai-compatible``: the body goes on with ``model`` set to the provider's
  name and ``Authorization: Bearer <key>``; a stream gets ``stream_options.include_usage`` (so
  the router can price it) and the usage-only chunk is left out of the client's stream when the
  client did not ask for it.
- ``anthropic``: ``/v1/chat/completions`` only, translated by :mod:`inferscale.router.anthropic`
  to ``POST /v1/messages`` (``x-api-key``, ``anthropic-version``) and back, streams included.
- ``azure-openai``, ``gemini``, ``vertex-ai``, ``cohere``, ``bedrock``: what each is sent
  (URL, auth, body) is :mod:`inferscale.router.dialects`; the ones that are not OpenAI's API
  come back through the Messages translation, as Anthropic's answers do. Bedrock's requests are
  signed (SigV4, :mod:`inferscale.router.aws`) and its streams are AWS's binary event stream.

Failure behaviour (nothing here logs, least of all the key):

- Before the first byte reaches the client every fault is a :class:`ProviderFault`, which the
  router fails over on: connect errors, timeouts (the provider's ``timeoutSeconds`` for the
  whole answer, the route's ``firstTokenSeconds`` for its first byte and any stall), 408, 429
  and 5xx (Anthropic's 529 included), 401/403 (the router's key is refused: rotated or wrong),
  404 (a model or URL the provider does not know), a body that is not what the API answers, and
  a stream whose first event is malformed or an error. ``reason`` is the metric label.
- Other 4xx answers are the provider's verdict on the request itself (:class:`ProviderRefusal`):
  the client gets the error (translated to OpenAI's shape), with no failover.
- A request the provider cannot express (a path it lacks, a chat feature Anthropic has no
  equivalent for) is :class:`Unsupported`: the router tries another backend, else answers 400.
- After the first byte a broken stream (cut, stalled, malformed, an error event) ends with an
  OpenAI error event and no ``[DONE]``; :attr:`Stream.failure` names the cause.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from inferscale.protocol.table import TableProvider
from inferscale.router import aws, dialects
from inferscale.router.anthropic import (
    MalformedResponse,
    StreamTranslator,
    TranslationError,
    error_to_openai,
    messages_to_chat,
)
from inferscale.router.bedrock import EventStreamDecoder
from inferscale.router.codec import dumps, loads, sse_error
from inferscale.router.sse import DONE, MalformedStream, SseDecoder, SseEvent

RETRYABLE_STATUSES: Final = frozenset({408, 409, 429})
"""4xx statuses that say "not now" rather than "not this request": failed over."""


class ProviderFault(Exception):
    """The provider failed before anything reached the client: fail over.

    ``reason`` is the metric label (``connect``, ``timeout``, ``status_429``, ``status_5xx``,
    ``auth``, ``not_found``, ``malformed``, ``stream_error``, ``no_key``); ``status`` and
    ``error`` are what the client gets when no other backend answers; ``retry_after`` is the
    provider's ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        status: int = 502,
        error: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        """``message`` explains the fault without the key or the request's content."""
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.error = error
        self.retry_after = retry_after


MAX_RETRY_AFTER_SECONDS: Final = 3600.0
"""A longer ``Retry-After`` is read as this (a provider's header is outside data)."""


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The provider's ``retry-after-ms`` or ``Retry-After`` (seconds) as seconds, if sensible.

    An HTTP-date, a negative or a non-numeric value gives ``None`` (the caller backs off).
    """
    for name, scale in (("retry-after-ms", 0.001), ("Retry-After", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw.strip()) * scale
        except ValueError:
            continue
        if value >= 0 and value == value:  # NaN is not a wait
            return min(value, MAX_RETRY_AFTER_SECONDS)
    return None


class ProviderRefusal(Exception):
    """The provider refused the request itself (a 4xx about its content): the client gets it."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        """``error`` is an OpenAI error object."""
        super().__init__(str(error))
        self.status = status
        self.error = error


class Unsupported(Exception):
    """This provider cannot serve this request; another backend may."""

    def __init__(self, message: str, param: str | None = None) -> None:
        """``message`` is what the client gets if nothing else serves the request."""
        super().__init__(message)
        self.message = message
        self.param = param


def serves_path(provider: TableProvider, path: str) -> bool:
    """Whether the provider's API has ``path`` (other dialects than OpenAI's: chat only)."""
    return dialects.serves(provider.type, path)


@dataclass
class Answer:
    """A whole answer in the OpenAI shape (2xx)."""

    status: int
    body: bytes
    usage: dict[str, Any] | None


@dataclass
class Stream:
    """A streamed answer: its first chunks (already read) and the rest, as OpenAI SSE bytes."""

    first: bytes
    _rest: AsyncIterator[bytes]
    _response: aiohttp.ClientResponse
    state: _StreamState

    def rest(self) -> AsyncIterator[bytes]:
        """The remaining SSE bytes; a broken stream ends with an error event."""
        return self._rest

    @property
    def usage(self) -> dict[str, Any] | None:
        """The usage seen so far (complete once the stream ended)."""
        return self.state.usage

    @property
    def failure(self) -> str | None:
        """Why the stream broke after its first byte, or None.

        One of ``cut``, ``timeout``, ``malformed``, ``stream_error``.
        """
        return self.state.failure

    def close(self) -> None:
        """Release the connection (a stream not read to its end closes it)."""
        self._response.close()


@dataclass
class _StreamState:
    usage: dict[str, Any] | None = None
    failure: str | None = None
    done: bool = False
    first_error: dict[str, Any] | None = None
    """An error event before the first chunk (the stream then fails over)."""


Translate = Callable[[SseEvent, _StreamState], list[bytes]]


def _openai_events(strip_usage: bool) -> Translate:
    def translate(event: SseEvent, state: _StreamState) -> list[bytes]:
        if event.data == "[DONE]":
            state.done = True
            return [DONE]
        try:
            doc = loads(event.data)
        except ValueError as bad:
            raise MalformedStream("an event's data is not JSON") from bad
        if not isinstance(doc, dict):
            raise MalformedStream("an event's data is not a JSON object")
        if "error" in doc:
            found = doc["error"] if isinstance(doc["error"], dict) else {"message": str(doc)}
            state.first_error = {"error": found}
            return [b"data: " + dumps({"error": found}) + b"\n\n"]
        usage = doc.get("usage")
        if isinstance(usage, dict):
            state.usage = usage
            if strip_usage and doc.get("choices") == []:
                return []  # the chunk the router asked for, not the client
        data = event.data.encode() if "\n" not in event.data else dumps(doc)
        return [b"data: " + data + b"\n\n"]

    return translate


def _messages_events(translator: StreamTranslator, convert: dialects.Events | None) -> Translate:
    """Messages stream events (``convert`` makes them from the provider's) to OpenAI chunks."""

    def translate(event: SseEvent, state: _StreamState) -> list[bytes]:
        try:
            doc = loads(event.data)
        except ValueError as error:
            raise MalformedStream("an event's data is not JSON") from error
        try:
            events = convert(doc) if convert is not None else [doc]
            out = [chunk for each in events for chunk in translator.feed(each)]
        except MalformedResponse as error:
            raise MalformedStream(str(error)) from error
        state.usage = translator.usage
        if translator.failed is not None:
            state.first_error = translator.failed
        if translator.finished:
            state.done = True
        return out

    return translate


def _fault_for_status(
    provider_id: str,
    status: int,
    error: dict[str, Any],
    client_status: int,
    retry_after: float | None = None,
) -> ProviderFault | ProviderRefusal:
    where = f"provider {provider_id}"
    if status in (401, 403):
        return ProviderFault(
            "auth",
            f"{where} refused the router's API key (HTTP {status}): the key in its Secret may "
            "be wrong or rotated",
        )
    if status == 404:
        return ProviderFault(
            "not_found", f"{where} answered 404: check its baseURL and the provider model name"
        )
    if status in RETRYABLE_STATUSES or status >= 500:
        reason = "status_429" if status == 429 else "status_5xx" if status >= 500 else "status_4xx"
        message = (error.get("error") or {}).get("message") if isinstance(error, dict) else None
        return ProviderFault(
            reason,
            f"{where} answered HTTP {status}" + (f": {message}" if message else ""),
            status=client_status if client_status in (429, 503, 504) else 502,
            error=error,
            retry_after=retry_after,
        )
    return ProviderRefusal(status, error)


def _openai_error(status: int, body: bytes) -> dict[str, Any]:
    """The provider's error object if it is OpenAI-shaped, else one that says the status."""
    try:
        doc = loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return doc
    message = f"the provider answered HTTP {status}"
    return {"error": {"message": message, "type": "upstream_error", "param": None, "code": None}}


async def _first_chunks(
    response: aiohttp.ClientResponse,
    decoder: SseDecoder | EventStreamDecoder,
    translate: Translate,
    state: _StreamState,
    provider_id: str,
) -> bytes:
    """Read until the stream yields its first chunk for the client (failures: a fault)."""
    while True:
        data = await response.content.readany()
        if not data:
            raise ProviderFault(
                "malformed", f"provider {provider_id} ended its stream before the first event"
            )
        try:
            out = [chunk for event in decoder.feed(data) for chunk in translate(event, state)]
        except MalformedStream as error:
            raise ProviderFault(
                "malformed", f"provider {provider_id} sent a malformed stream: {error}"
            ) from error
        if state.first_error is not None:
            message = (state.first_error.get("error") or {}).get("message") or "an error event"
            raise ProviderFault(
                "stream_error",
                f"provider {provider_id} began its stream with an error: {message}",
                error=state.first_error,
            )
        if out:
            return b"".join(out)


async def _rest(
    response: aiohttp.ClientResponse,
    decoder: SseDecoder | EventStreamDecoder,
    translate: Translate,
    state: _StreamState,
    provider_id: str,
) -> AsyncIterator[bytes]:
    try:
        while not state.done:
            data = await response.content.readany()
            if not data:
                break
            out = [chunk for event in decoder.feed(data) for chunk in translate(event, state)]
            if out:
                yield b"".join(out)
            if state.first_error is not None:
                state.failure = "stream_error"
                return
    except MalformedStream:
        state.failure = "malformed"
        yield sse_error(502, f"provider {provider_id} sent a malformed stream", "upstream_error")
        return
    except TimeoutError:
        state.failure = "timeout"
        yield sse_error(504, f"provider {provider_id} stalled mid-stream", "timeout")
        return
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        pass
    if not state.done:
        state.failure = "cut"
        yield sse_error(502, f"provider {provider_id} broke off the stream", "upstream_error")


async def call(
    session: aiohttp.ClientSession,
    provider_id: str,
    provider: TableProvider,
    model: str,
    key: str,
    path: str,
    obj: dict[str, Any],
    *,
    connect_timeout: float,
    first_byte_timeout: float,
    total_timeout: float,
    created: int | None = None,
) -> Answer | Stream:
    """Send the OpenAI request ``obj`` (to ``path``) to ``model`` of the provider.

    Raises:
        ProviderFault: it failed before the first byte (fail over).
        ProviderRefusal: the provider refused the request itself.
        Unsupported: the provider cannot serve this request.
    """
    entry = provider.models[model]
    stream = obj.get("stream") is True
    options = obj.get("stream_options")
    client_usage = isinstance(options, dict) and options.get("include_usage") is True
    created = int(time.time()) if created is None else created
    if not serves_path(provider, path):
        raise Unsupported(f"provider {provider_id} ({provider.type}) does not serve {path}")
    try:
        out = dialects.prepare(provider, entry.provider_model, key, path, obj)
    except TranslationError as error:
        raise Unsupported(error.message, error.param) from error
    if out.shape == "openai":
        translate = _openai_events(out.strip_usage)
    else:
        translate = _messages_events(StreamTranslator(created, client_usage), out.events)
    body = dumps(out.body)
    headers = await _auth_headers(out, key, body, provider_id)
    timeout = aiohttp.ClientTimeout(
        total=total_timeout, sock_connect=connect_timeout, sock_read=first_byte_timeout
    )
    try:
        response = await session.post(out.url, data=body, headers=headers, timeout=timeout)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
        raise ProviderFault(
            "connect", f"cannot connect to provider {provider_id}: {type(error).__name__}"
        ) from error
    except TimeoutError as error:
        raise ProviderFault(
            "timeout", f"provider {provider_id} did not answer in time", status=504
        ) from error
    except aiohttp.ClientError as error:
        raise ProviderFault(
            "connect", f"provider {provider_id} failed: {type(error).__name__}"
        ) from error
    try:
        return await _answer(response, provider_id, provider, out, stream, translate, created)
    except BaseException:
        response.close()
        raise


async def _auth_headers(
    out: dialects.Outgoing, key: str, body: bytes, provider_id: str
) -> dict[str, str]:
    """The request's headers, signed with SigV4 when the provider wants it (Bedrock)."""
    if out.aws_region is None:
        return out.headers
    try:
        credentials = aws.parse_credentials(key)
    except ValueError as error:
        raise ProviderFault("auth", f"provider {provider_id}: {error}") from error
    return await aws.signed_headers("POST", out.url, out.headers, body, credentials, out.aws_region)


async def _answer(
    response: aiohttp.ClientResponse,
    provider_id: str,
    provider: TableProvider,
    out: dialects.Outgoing,
    stream: bool,
    translate: Translate,
    created: int,
) -> Answer | Stream:
    status = response.status
    ctype = response.headers.get("Content-Type", "")
    streamed = stream and ctype.startswith(out.stream_type)
    try:
        if status >= 300 or not streamed:
            body = await response.read()
            response.release()
    except TimeoutError as error:
        raise ProviderFault(
            "timeout", f"provider {provider_id} did not answer in time", status=504
        ) from error
    except aiohttp.ClientError as error:
        raise ProviderFault(
            "connect", f"provider {provider_id} broke off: {type(error).__name__}"
        ) from error
    if status >= 300:
        if provider.type == "anthropic":
            client_status, refusal = error_to_openai(status, body)
        elif out.shape == "openai":
            client_status, refusal = status, _openai_error(status, body)
        else:
            client_status, refusal = status, dialects.error_of(status, body)
        raise _fault_for_status(
            provider_id, status, refusal, client_status, retry_after_seconds(response.headers)
        )
    if streamed:
        state = _StreamState()
        decoder = EventStreamDecoder() if out.aws_region is not None else SseDecoder()
        try:
            first = await _first_chunks(response, decoder, translate, state, provider_id)
        except TimeoutError as error:
            raise ProviderFault(
                "timeout", f"provider {provider_id} sent no first event in time", status=504
            ) from error
        except (aiohttp.ClientPayloadError, aiohttp.ClientOSError) as error:
            raise ProviderFault(
                "malformed",
                f"provider {provider_id} broke off before its first event: {type(error).__name__}",
            ) from error
        rest = _rest(response, decoder, translate, state, provider_id)
        return Stream(first, rest, response, state)
    if stream:
        raise ProviderFault(
            "malformed", f"provider {provider_id} answered a stream request without a stream"
        )
    try:
        doc = loads(body)
    except ValueError as error:
        raise ProviderFault(
            "malformed", f"provider {provider_id} answered with a body that is not JSON"
        ) from error
    if out.shape == "messages":
        try:
            message = out.to_message(doc) if out.to_message is not None else doc
            chat = messages_to_chat(message, created)
        except MalformedResponse as error:
            raise ProviderFault("malformed", f"provider {provider_id}: {error}") from error
        return Answer(status, dumps(chat), chat.get("usage"))
    if not isinstance(doc, dict):
        raise ProviderFault(
            "malformed", f"provider {provider_id} answered a body that is no object"
        )
    usage = doc.get("usage")
    return Answer(status, body, usage if isinstance(usage, dict) else None)
