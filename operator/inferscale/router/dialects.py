"""What each provider type is sent for one OpenAI request: URL, auth headers, body (pure).

:func:`prepare` turns the client's OpenAI request into an :class:`Outgoing` for the provider's
type, and says how its answer comes back (:attr:`Outgoing.shape`):

- ``openai``: OpenAI's own API, passed through with ``model`` renamed (``openai``,
  ``openai-compatible`` and its presets, ``azure-openai``: the deployment in the URL,
  ``api-version``, ``api-key`` or an Entra bearer token).
- ``messages``: a dialect that speaks in turns of content blocks. The request is first made a
  Messages request (:func:`inferscale.router.anthropic.chat_to_messages`, which validates it),
  then the provider's own (Gemini, Vertex AI, Cohere, Bedrock's Converse);
  :attr:`Outgoing.to_message` and :attr:`Outgoing.events` turn its answer and stream chunks
  into Messages ones, which
  :mod:`inferscale.router.anthropic` turns into OpenAI's. Anthropic itself is the identity.

Each dialect serves :data:`PATHS` of its type; :func:`error_of` reads any provider's error body
into OpenAI's error shape.

Pure: no I/O, no clock. Keys go only into the headers returned (never a message).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import quote

from inferscale.protocol.table import TableProvider
from inferscale.router import bedrock, cohere, gemini
from inferscale.router.anthropic import DEFAULT_MAX_TOKENS, ERROR_TYPES, chat_to_messages

CHAT: Final = "/v1/chat/completions"
OPENAI_PATHS: Final = (CHAT, "/v1/completions", "/v1/embeddings")

PATHS: Final[dict[str, tuple[str, ...]]] = {
    "openai": OPENAI_PATHS,
    "openai-compatible": OPENAI_PATHS,
    "azure-openai": OPENAI_PATHS,
    "anthropic": (CHAT,),
    "gemini": (CHAT,),
    "vertex-ai": (CHAT,),
    "cohere": (CHAT,),
    "bedrock": (CHAT,),
}
"""The OpenAI paths each provider type serves."""

JSON_HEADERS: Final = {"Content-Type": "application/json"}

Events = Callable[[object], list[dict[str, Any]]]
"""One provider stream chunk (parsed JSON) -> the Messages stream events it makes."""


@dataclass(frozen=True)
class Outgoing:
    """One request to a provider, and how to read its answer."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    shape: Literal["openai", "messages"]
    to_message: Callable[[object], dict[str, Any]] | None = None
    """A whole answer -> a Messages response (``messages`` shape; None: it is one)."""
    events: Events | None = None
    """A stream chunk -> Messages events (``messages`` shape; None: it is one)."""
    strip_usage: bool = False
    """The router asked for the stream's usage chunk; the client did not (``openai``)."""
    stream_type: str = "text/event-stream"
    """The ``Content-Type`` of its streams (server-sent events, or AWS's event stream)."""
    aws_region: str | None = None
    """Sign the request with SigV4 for this region (the key is an AWS key pair)."""


def serves(provider_type: str, path: str) -> bool:
    """Whether providers of this type serve ``path``."""
    return path in PATHS.get(provider_type, ())


def _openai(
    provider: TableProvider, model: str, key: str, path: str, obj: Mapping[str, Any]
) -> Outgoing:
    doc = dict(obj)
    doc["model"] = model
    options = obj.get("stream_options")
    client_usage = isinstance(options, Mapping) and options.get("include_usage") is True
    strip = False
    if obj.get("stream") is True and path != "/v1/embeddings" and not client_usage:
        doc["stream_options"] = {**(options or {}), "include_usage": True}
        strip = True
    tail = path.removeprefix("/v1")
    headers = {"Authorization": f"Bearer {key}", **JSON_HEADERS}
    if provider.type == "azure-openai":
        azure = provider.azure
        version = azure.api_version if azure is not None else "2024-10-21"
        url = (
            f"{provider.base_url}/openai/deployments/{quote(model, safe='')}{tail}"
            f"?api-version={quote(version)}"
        )
        if azure is None or azure.auth == "api-key":
            headers = {"api-key": key, **JSON_HEADERS}
    else:
        url = provider.base_url + tail
    return Outgoing(url, headers, doc, "openai", strip_usage=strip)


def _google(
    provider: TableProvider, model: str, key: str, obj: Mapping[str, Any], request: dict[str, Any]
) -> Outgoing:
    temperature = obj.get("temperature")
    body = gemini.to_gemini(
        request, float(temperature) if isinstance(temperature, int | float) else None
    )
    method = "streamGenerateContent?alt=sse" if obj.get("stream") is True else "generateContent"
    name = quote(model, safe="")
    if provider.type == "vertex-ai" and provider.vertex is not None:
        where = provider.vertex
        url = (
            f"{provider.base_url}/v1/projects/{where.project}/locations/{where.location}"
            f"/publishers/google/models/{name}:{method}"
        )
        headers = {"Authorization": f"Bearer {key}", **JSON_HEADERS}
    else:
        url = f"{provider.base_url}/v1beta/models/{name}:{method}"
        headers = {"x-goog-api-key": key, **JSON_HEADERS}
    stream = gemini.GeminiEvents(model)
    return Outgoing(
        url,
        headers,
        body,
        "messages",
        to_message=lambda doc: gemini.to_message(doc, model),
        events=stream.feed,
    )


def prepare(
    provider: TableProvider, model: str, key: str, path: str, obj: Mapping[str, Any]
) -> Outgoing:
    """The request for ``model`` (the provider's name) of ``provider`` with ``key``.

    Raises:
        TranslationError: the request cannot be expressed in the provider's API.
    """
    kind = provider.type
    if kind in ("openai", "openai-compatible", "azure-openai"):
        return _openai(provider, model, key, path, obj)
    request = chat_to_messages(obj, model, DEFAULT_MAX_TOKENS)
    if kind == "anthropic":
        headers = {"x-api-key": key, "anthropic-version": provider.anthropic_version}
        return Outgoing(
            f"{provider.base_url}/v1/messages", {**headers, **JSON_HEADERS}, request, "messages"
        )
    if kind in ("gemini", "vertex-ai"):
        return _google(provider, model, key, obj, request)
    if kind == "cohere":
        stream = cohere.CohereEvents(model)
        return Outgoing(
            f"{provider.base_url}/v2/chat",
            {"Authorization": f"Bearer {key}", **JSON_HEADERS},
            cohere.to_cohere(request, obj),
            "messages",
            to_message=lambda doc: cohere.to_message(doc, model),
            events=stream.feed,
        )
    if kind == "bedrock":
        method = "/converse-stream" if obj.get("stream") is True else "/converse"
        events = bedrock.ConverseEvents(model)
        return Outgoing(
            f"{provider.base_url}/model/{quote(model, safe='')}{method}",
            dict(JSON_HEADERS),
            bedrock.to_converse(request),
            "messages",
            to_message=lambda doc: bedrock.to_message(doc, model),
            events=events.feed,
            stream_type=bedrock.CONTENT_TYPE,
            aws_region=provider.bedrock.region if provider.bedrock is not None else None,
        )
    raise AssertionError(f"no dialect for provider type {kind!r}")  # the API's types are all here


def error_of(status: int, body: bytes) -> dict[str, Any]:
    """Any provider's error body as an OpenAI error object (its message kept when it has one).

    Reads OpenAI's and Anthropic's ``{"error": {"message", "type"}}``, Google's ``{"error":
    {"message", "status"}}`` and Cohere's and AWS's ``{"message"}``.
    """
    message = f"the provider answered HTTP {status}"
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
    error = doc.get("error") if isinstance(doc, Mapping) else None
    if isinstance(error, Mapping):
        found = error
    elif isinstance(doc, Mapping):
        found = doc
    else:
        found = {}
    if isinstance(found.get("message"), str) and found["message"]:
        message = found["message"]
    if isinstance(found.get("type"), str):
        kind = found["type"]
    if isinstance(found.get("code"), str):
        code = found["code"]
    elif isinstance(found.get("status"), str):
        code = found["status"]
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
