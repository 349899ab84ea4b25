"""Anthropic's Messages API for clients <-> the OpenAI chat completions the pipeline serves (pure).

Clients may speak Anthropic's Messages API (``POST /v1/messages``) to the router. Such a request
is parsed into the same internal form as an OpenAI one, a ``chat.completions`` body, so every
stage (access, limits, selection, picking, forwarding, accounting) treats both alike; only the
codec at each end differs. This module owns that codec:

- a Messages request into a ``chat.completions`` request (:func:`messages_to_chat`): ``system``
  becomes a system message; ``tool_result`` blocks become ``tool`` messages (before the rest of
  their user turn, as OpenAI orders them); ``tool_use`` blocks become the assistant's
  ``tool_calls``; images become ``image_url`` parts; ``tools``/``tool_choice``,
  ``stop_sequences``, ``max_tokens``, ``temperature``, ``top_p``, ``top_k`` and
  ``metadata.user_id`` carry over; a stream asks for the usage chunk (for accounting and for the
  client's ``message_delta``). Thinking blocks and ``thinking`` are dropped (OpenAI engines have
  no equivalent field; the answer is still correct, only without a reasoning budget).
- a ``chat.completion`` into a Messages response (:func:`chat_to_message`);
- ``chat.completion.chunk`` events into Messages events (:class:`EventTranslator`):
  ``message_start``, ``ping``, ``content_block_start``/``delta``/``stop`` (text and
  ``tool_use`` with ``input_json_delta``), ``message_delta`` (stop reason and usage),
  ``message_stop``; an OpenAI error event becomes an ``error`` event;
- OpenAI error objects into Anthropic's (:func:`error_body`), by status.

Bad requests raise :class:`MessagesError` with the offending field; the router answers 400 in
Anthropic's error shape. Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

CHAT_PATH: Final = "/v1/chat/completions"
"""Where a translated Messages request goes (engines and providers serve chat completions)."""

ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""Anthropic's error ``type`` by HTTP status (anything else: ``api_error``)."""

STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
"""OpenAI ``finish_reason`` -> Anthropic ``stop_reason`` (anything else: ``end_turn``)."""

ANTHROPIC_VERSION: Final = "anthropic-version"
"""The header every Anthropic SDK request carries: ``GET /v1/models`` answers it Anthropic's way."""
EPOCH: Final = "1970-01-01T00:00:00Z"
"""``created_at`` of a model (the router does not know when a model was made)."""

ROLES: Final = ("user", "assistant")
_DROPPED_BLOCKS: Final = frozenset({"thinking", "redacted_thinking"})


class MessagesError(ValueError):
    """A Messages request the router cannot serve (malformed, or not expressible): a 400."""

    def __init__(self, message: str) -> None:
        """``message`` names the field and is shown to the client."""
        super().__init__(message)
        self.message = message


# -- request ------------------------------------------------------------------------------


def _text_blocks(content: object, where: str) -> str:
    """A string, or a list of text blocks, as one string (system prompts, tool results)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise MessagesError(f"{where}: must be a string or a list of text blocks")
    texts = []
    for i, block in enumerate(content):
        if not isinstance(block, Mapping) or block.get("type") != "text":
            raise MessagesError(f"{where}.{i}: only text blocks are supported here")
        texts.append(_string(block, "text", f"{where}.{i}"))
    return "\n".join(texts)


def _string(obj: Mapping[str, Any], field: str, where: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str):
        raise MessagesError(f"{where}.{field}: a string is required")
    return value


def _image_part(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise MessagesError(f"{where}.source: an object is required")
    if source.get("type") == "base64":
        media = _string(source, "media_type", f"{where}.source")
        data = _string(source, "data", f"{where}.source")
        url = f"data:{media};base64,{data}"
    elif source.get("type") == "url":
        url = _string(source, "url", f"{where}.source")
    else:
        raise MessagesError(f"{where}.source.type: 'base64' or 'url' is required")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_call(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    tool_input = block.get("input", {})
    if not isinstance(tool_input, Mapping):
        raise MessagesError(f"{where}.input: an object is required")
    return {
        "id": _string(block, "id", where),
        "type": "function",
        "function": {
            "name": _string(block, "name", where),
            "arguments": json.dumps(tool_input, separators=(",", ":")),
        },
    }


def _tool_message(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    content = block.get("content", "")
    text = _text_blocks(content, f"{where}.content") if content is not None else ""
    if block.get("is_error") is True:
        text = f"Error: {text}"  # OpenAI tool messages have no error flag
    return {"role": "tool", "tool_call_id": _string(block, "tool_use_id", where), "content": text}


def _turn(message: object, where: str) -> list[dict[str, Any]]:
    """One Messages turn as OpenAI messages (tool results first, as their own messages)."""
    if not isinstance(message, Mapping):
        raise MessagesError(f"{where}: must be an object")
    role = message.get("role")
    if role not in ROLES:
        raise MessagesError(f"{where}.role: must be 'user' or 'assistant'")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise MessagesError(f"{where}.content: must be a string or a list of content blocks")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        at = f"{where}.content.{i}"
        kind = block.get("type") if isinstance(block, Mapping) else None
        if not isinstance(block, Mapping) or not isinstance(kind, str):
            raise MessagesError(f"{at}: a content block with a type is required")
        if kind == "text":
            parts.append({"type": "text", "text": _string(block, "text", at)})
        elif kind == "image" and role == "user":
            parts.append(_image_part(block, at))
        elif kind == "tool_use" and role == "assistant":
            calls.append(_tool_call(block, at))
        elif kind == "tool_result" and role == "user":
            tools.append(_tool_message(block, at))
        elif kind not in _DROPPED_BLOCKS:
            raise MessagesError(f"{at}.type: {kind!r} is not supported in a {role} message")
    out = tools
    if role == "assistant":
        text = "".join(p["text"] for p in parts)
        if text or calls:
            turn: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                turn["tool_calls"] = calls
            out.append(turn)
    elif parts:
        plain = all(p["type"] == "text" for p in parts)
        text_content = "\n".join(p["text"] for p in parts) if plain else parts
        out.append({"role": "user", "content": text_content})
    return out


def _tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise MessagesError("tools: must be a list")
    out = []
    for i, tool in enumerate(tools):
        where = f"tools.{i}"
        if not isinstance(tool, Mapping):
            raise MessagesError(f"{where}: must be an object")
        if tool.get("type") not in (None, "custom"):
            raise MessagesError(f"{where}.type: server tools ({tool['type']!r}) are not supported")
        schema = tool.get("input_schema")
        if not isinstance(schema, Mapping):
            raise MessagesError(f"{where}.input_schema: an object is required")
        function: dict[str, Any] = {"name": _string(tool, "name", where), "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: object, out: dict[str, Any]) -> None:
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice, Mapping):
        name = _string(choice, "name", "tool_choice")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise MessagesError("tool_choice.type: must be 'auto', 'any', 'tool' or 'none'")
    if isinstance(choice, Mapping) and choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def _number(obj: Mapping[str, Any], field: str, out: dict[str, Any]) -> None:
    value = obj.get(field)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MessagesError(f"{field}: must be a number")
    out[field] = value


def _max_tokens(obj: Mapping[str, Any]) -> int:
    value = obj.get("max_tokens")
    if value is None:
        raise MessagesError("max_tokens: Field required")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MessagesError("max_tokens: must be a positive integer")
    return value


def _options(obj: Mapping[str, Any], out: dict[str, Any]) -> None:
    """The sampling and tool fields of a request, copied into ``out``."""
    for field in ("temperature", "top_p", "top_k"):
        _number(obj, field, out)
    stop = obj.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise MessagesError("stop_sequences: must be a list of strings")
        if stop:
            out["stop"] = list(stop)
    if obj.get("tools"):
        out["tools"] = _tools(obj["tools"])
    _tool_choice(obj.get("tool_choice"), out)
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise MessagesError("metadata: must be an object")
    if metadata and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]


def messages_to_chat(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The ``chat.completions`` body for a Messages request body.

    Raises:
        MessagesError: the request is malformed or cannot be expressed (the message says what).
    """
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        raise MessagesError("model: a non-empty string is required")
    max_tokens = _max_tokens(obj)
    stream = obj.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise MessagesError("stream: must be a boolean")
    raw = obj.get("messages")
    if not isinstance(raw, list) or not raw:
        raise MessagesError("messages: a non-empty list is required")
    chat: list[dict[str, Any]] = []
    system = obj.get("system")
    if system is not None:
        text = _text_blocks(system, "system")
        if text:
            chat.append({"role": "system", "content": text})
    for i, message in enumerate(raw):
        chat += _turn(message, f"messages.{i}")
    out: dict[str, Any] = {"model": model, "messages": chat, "max_tokens": max_tokens}
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    _options(obj, out)
    return out


def stop_sequences(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """The request's ``stop_sequences`` (to name the one an engine stopped at)."""
    stop = obj.get("stop_sequences")
    return tuple(s for s in stop if isinstance(s, str)) if isinstance(stop, list) else ()


# -- response -----------------------------------------------------------------------------


def message_usage(usage: object) -> dict[str, int]:
    """OpenAI ``usage`` as Anthropic's (cached prompt tokens are cache reads, not input)."""
    if not isinstance(usage, Mapping):
        return {"input_tokens": 0, "output_tokens": 0}

    def count(doc: Mapping[str, Any], name: str) -> int:
        value = doc.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    details = usage.get("prompt_tokens_details")
    cached = count(details, "cached_tokens") if isinstance(details, Mapping) else 0
    out = {
        "input_tokens": max(count(usage, "prompt_tokens") - cached, 0),
        "output_tokens": count(usage, "completion_tokens"),
    }
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def stop_reason(
    finish: object, matched: object, sequences: tuple[str, ...]
) -> tuple[str, str | None]:
    """(``stop_reason``, ``stop_sequence``) for an OpenAI finish.

    ``matched`` is vLLM's ``stop_reason`` (the stop string it matched), when the engine says.
    """
    if finish == "stop" and isinstance(matched, str) and matched in sequences:
        return "stop_sequence", matched
    return STOP_REASONS.get(str(finish), "end_turn"), None


def _tool_input(arguments: object) -> dict[str, Any]:
    """A tool call's arguments as an object (arguments that are no JSON object: kept raw)."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except (ValueError, RecursionError):
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}


def message_id(chat_id: object) -> str:
    """A Messages id for an OpenAI completion id."""
    return f"msg_{chat_id}" if isinstance(chat_id, str) and chat_id else "msg_inferscale"


def chat_to_message(doc: object, model: str, sequences: tuple[str, ...] = ()) -> dict[str, Any]:
    """The Messages response for a ``chat.completion`` answered to a request for ``model``.

    Raises:
        MessagesError: ``doc`` is not a chat completion (the caller answers 502).
    """
    choices = doc.get("choices") if isinstance(doc, Mapping) else None
    if not isinstance(doc, Mapping) or not isinstance(choices, list) or not choices:
        raise MessagesError("the engine's answer is not a chat completion")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, Mapping) else None
    if not isinstance(choice, Mapping) or not isinstance(message, Mapping):
        raise MessagesError("the engine's answer has no message")
    content: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(call, Mapping) and isinstance(function, Mapping):
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id") or "toolu_inferscale",
                    "name": function.get("name") or "",
                    "input": _tool_input(function.get("arguments")),
                }
            )
    reason, sequence = stop_reason(
        choice.get("finish_reason"), choice.get("stop_reason"), sequences
    )
    return {
        "id": message_id(doc.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": message_usage(doc.get("usage")),
    }


def error_body(status: int, openai_body: bytes) -> dict[str, Any]:
    """Anthropic's error object for an answer of ``status`` with an OpenAI error body."""
    message = f"HTTP {status}"
    try:
        doc = json.loads(openai_body) if openai_body else None
    except (ValueError, RecursionError, UnicodeDecodeError):
        doc = None
    error = doc.get("error") if isinstance(doc, Mapping) else None
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        message = error["message"]
    elif isinstance(error, str):
        message = error
    elif isinstance(doc, Mapping) and isinstance(doc.get("message"), str):
        message = doc["message"]  # vLLM's older error object: the message at the top level
    return {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
    }


def event(name: str, doc: Mapping[str, Any]) -> bytes:
    """One Messages SSE event."""
    return (
        f"event: {name}\ndata: ".encode()
        + json.dumps(doc, separators=(",", ":")).encode()
        + b"\n\n"
    )


PING: Final = event("ping", {"type": "ping"})


def openai_model(name: str) -> dict[str, Any]:
    """A served model as OpenAI's ``/v1/models`` shows one."""
    return {"id": name, "object": "model", "created": 0, "owned_by": "inferscale"}


def anthropic_model(name: str) -> dict[str, Any]:
    """A served model as Anthropic's ``/v1/models`` shows one."""
    return {"type": "model", "id": name, "display_name": name, "created_at": EPOCH}


def model_list(names: list[str]) -> dict[str, Any]:
    """Anthropic's ``/v1/models`` page of ``names`` (the router returns every model at once)."""
    return {
        "data": [anthropic_model(name) for name in names],
        "has_more": False,
        "first_id": names[0] if names else None,
        "last_id": names[-1] if names else None,
    }


# -- stream -------------------------------------------------------------------------------


class EventTranslator:
    """``chat.completion.chunk`` events in, Messages events (SSE bytes) out.

    Feed each OpenAI event's parsed JSON (:meth:`feed`), then ``[DONE]`` (:meth:`done`). The
    finish reason and the usage chunk come before ``[DONE]`` in OpenAI streams, so
    ``message_delta`` and ``message_stop`` go out at ``[DONE]``. Text and tool calls become
    content blocks, one open at a time, in the order they arrive.
    """

    def __init__(self, model: str, sequences: tuple[str, ...] = ()) -> None:
        """A stream answering a request for ``model`` with these ``stop_sequences``."""
        self.model = model
        self.sequences = sequences
        self.started = False
        self.finished = False
        self.usage: dict[str, int] = {"input_tokens": 0, "output_tokens": 0}
        self._blocks = 0
        self._open: str | None = None
        """The open block: ``"text"``, ``"tool:<index>"``, or None."""
        self._tools: dict[int, int] = {}
        """OpenAI tool-call index -> content-block index."""
        self._finish: object = None
        self._matched: object = None

    def feed(self, doc: object) -> list[bytes]:
        """The events one OpenAI stream event makes (a whole completion: its every event)."""
        if not isinstance(doc, Mapping):
            return []
        if "error" in doc:
            self.finished = True
            body = json.dumps(doc).encode()
            code = doc["error"].get("code") if isinstance(doc["error"], Mapping) else None
            status = 504 if code == "timeout" else 500
            return [event("error", error_body(status, body))]
        out = self._start(doc.get("id"))
        if doc.get("object") == "chat.completion":
            return out + self._whole(doc)
        if isinstance(doc.get("usage"), Mapping):
            self.usage = message_usage(doc["usage"])
        for choice in doc.get("choices") or []:
            if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
                out += self._choice(choice)
        return out

    def _start(self, chat_id: object) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        message: dict[str, Any] = {
            "id": message_id(chat_id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": dict(self.usage),
        }
        return [event("message_start", {"type": "message_start", "message": message}), PING]

    def _choice(self, choice: Mapping[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            text = delta.get("content")
            if isinstance(text, str) and text:
                out += self._open_block("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                if isinstance(call, Mapping):
                    out += self._tool_delta(call)
        if choice.get("finish_reason") is not None:
            self._finish = choice["finish_reason"]
            self._matched = choice.get("stop_reason")
        return out

    def _tool_delta(self, call: Mapping[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        index = call.get("index", 0)
        function = call.get("function")
        if not isinstance(function, Mapping):
            function = {}
        if not isinstance(index, int):
            return out
        if index not in self._tools:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{index}",
                "name": function.get("name") or "",
                "input": {},
            }
            out += self._open_block(f"tool:{index}", block)
            self._tools[index] = self._blocks - 1
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out.append(self._delta(delta, self._tools[index]))
        return out

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        """Open a block of ``kind`` unless it is the open one (closing the open one first)."""
        if self._open == kind:
            return []
        out = self._close_block()
        self._open = kind
        self._blocks += 1
        start = {"type": "content_block_start", "index": self._blocks - 1, "content_block": block}
        out.append(event("content_block_start", start))
        return out

    def _close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        stop = {"type": "content_block_stop", "index": self._blocks - 1}
        return [event("content_block_stop", stop)]

    def _delta(self, delta: dict[str, Any], index: int | None = None) -> bytes:
        at = self._blocks - 1 if index is None else index
        return event(
            "content_block_delta", {"type": "content_block_delta", "index": at, "delta": delta}
        )

    def _whole(self, doc: Mapping[str, Any]) -> list[bytes]:
        """A whole completion (an engine answered JSON to a stream) as its events."""
        message = chat_to_message(doc, self.model, self.sequences)
        out: list[bytes] = []
        for block in message["content"]:
            if block["type"] == "text":
                out += self._open_block("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": block["text"]}))
            else:
                tool_input = json.dumps(block["input"], separators=(",", ":"))
                out += self._open_block(f"tool:{self._blocks}", {**block, "input": {}})
                out.append(self._delta({"type": "input_json_delta", "partial_json": tool_input}))
        self.usage = message["usage"]
        self._finish, self._matched = None, None
        return out + self._end(message["stop_reason"], message["stop_sequence"])

    def done(self) -> list[bytes]:
        """The stream's last events, at ``[DONE]``."""
        if self.finished:
            return []
        out = self._start(None)
        reason, sequence = stop_reason(self._finish, self._matched, self.sequences)
        return out + self._end(reason, sequence)

    def _end(self, reason: str, sequence: str | None) -> list[bytes]:
        self.finished = True
        out = self._close_block()
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": self.usage,
        }
        out.append(event("message_delta", delta))
        out.append(event("message_stop", {"type": "message_stop"}))
        return out
