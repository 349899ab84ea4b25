"""OpenAI chat completions <-> Anthropic's Messages API (pure translation, both directions).

Clients speak the OpenAI API to the router; an InferenceProvider of type ``anthropic`` speaks the
Messages API (``POST /v1/messages``). This module translates:

- a ``chat.completions`` request into a Messages request (:func:`chat_to_messages`): system and
  developer messages become the top-level ``system``; user, assistant and tool messages become
  alternating ``user``/``assistant`` turns of content blocks (text, images, ``tool_use``,
  ``tool_result``; consecutive turns of one role are merged); ``tools``/``tool_choice``/
  ``parallel_tool_calls``, ``stop``, ``max_tokens`` (a default when the client sent none),
  ``temperature`` (clamped to Anthropic's 0..1) and ``top_p``, ``user``;
- a Messages response into a ``chat.completion`` (:func:`messages_to_chat`);
- the Messages event stream into ``chat.completion.chunk`` events (:class:`StreamTranslator`),
  with usage and the finish reason (``end_turn``/``stop_sequence``/``pause_turn`` -> ``stop``,
  ``max_tokens`` -> ``length``, ``tool_use`` -> ``tool_calls``, ``refusal`` ->
  ``content_filter``);
- Anthropic errors into OpenAI error objects (:func:`error_to_openai`).

What the Messages API cannot do is refused with :class:`TranslationError` (the router answers
400, or tries the next backend): ``n`` > 1, ``logprobs``, ``response_format`` other than text,
non-function tools, audio or file content parts. Sampling fields Anthropic has no equivalent
for (``seed``, ``presence_penalty``, ``frequency_penalty``, ``logit_bias``, ...) are dropped.
Prompt tokens reported to the client (and priced) are Anthropic's input tokens plus its cache
reads and writes.

Pure: no I/O, no clock (``created`` timestamps are passed in).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

DEFAULT_MAX_TOKENS: Final = 4096
"""``max_tokens`` sent when the client set none (the Messages API requires one)."""

FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""Anthropic ``stop_reason`` -> OpenAI ``finish_reason`` (anything else: ``stop``)."""

ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
"""OpenAI error ``type`` by status, for errors that come from Anthropic."""

OVERLOADED_STATUS: Final = 529
"""Anthropic's "overloaded" status; clients get 503 for it (OpenAI clients know no 529)."""

_DATA_URL: Final = re.compile(r"^data:(image/[a-zA-Z0-9.+-]+);base64,(.+)$", re.DOTALL)
_IGNORED_PARTS: Final = frozenset({"refusal"})


class TranslationError(ValueError):
    """The request cannot be expressed in the Messages API (or is malformed): a 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        """``message`` is shown to the client; ``param`` names the offending field."""
        super().__init__(message)
        self.message = message
        self.param = param


class MalformedResponse(ValueError):
    """An Anthropic answer that is not a Messages response (the provider misbehaved)."""


# -- request ------------------------------------------------------------------------------


def _text_of(content: object, where: str) -> str:
    """The text of a system/tool message's content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise TranslationError(
                    f"{where}[{i}]: only text parts are allowed here", "messages"
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise TranslationError(f"{where}[{i}].text: must be a string", "messages")
            texts.append(text)
        return "\n".join(texts)
    raise TranslationError(f"{where}: must be a string or a list of text parts", "messages")


def _image_block(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    if not isinstance(url, str) or not url:
        raise TranslationError(f"{where}.image_url.url: a URL is required", "messages")
    found = _DATA_URL.match(url)
    if found:
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": found[1], "data": found[2]},
        }
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError(f"{where}.image_url.url: a data: or http(s) URL is required", "messages")


def _content_blocks(content: object, where: str) -> list[dict[str, Any]]:
    """User or assistant content (string, parts, or null) as Messages content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError(f"{where}: must be a string or a list of content parts", "messages")
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        at = f"{where}[{i}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise TranslationError(f"{at}.text: must be a string", "messages")
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_block(part, at))
        elif kind in _IGNORED_PARTS:
            continue
        else:
            raise TranslationError(
                f"{at}: content part type {kind!r} is not supported by Anthropic providers",
                "messages",
            )
    return blocks


def _tool_use_blocks(calls: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise TranslationError(f"{where}: must be a list", "messages")
    blocks = []
    for i, call in enumerate(calls):
        at = f"{where}[{i}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(call, Mapping) or not isinstance(function, Mapping):
            raise TranslationError(f"{at}: a function tool call is required", "messages")
        call_id, name = call.get("id"), function.get("name")
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise TranslationError(f"{at}: id and function.name must be strings", "messages")
        arguments = function.get("arguments") or "{}"
        try:
            tool_input = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError as error:
            raise TranslationError(
                f"{at}.function.arguments: not valid JSON", "messages"
            ) from error
        if not isinstance(tool_input, dict):
            raise TranslationError(f"{at}.function.arguments: must be a JSON object", "messages")
        blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": tool_input})
    return blocks


def _turns(messages: object) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating turns) from OpenAI ``messages``."""
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages: a non-empty list is required", "messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise TranslationError(f"{where}: must be an object", "messages")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = _text_of(content, f"{where}.content")
            if text:
                system.append({"type": "text", "text": text})
            continue
        if role == "user":
            kind, blocks = "user", _content_blocks(content, f"{where}.content")
        elif role == "assistant":
            kind = "assistant"
            blocks = _content_blocks(content, f"{where}.content")
            if message.get("tool_calls"):
                blocks += _tool_use_blocks(message["tool_calls"], f"{where}.tool_calls")
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise TranslationError(f"{where}.tool_call_id: a string is required", "messages")
            kind = "user"
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": call_id,
                    "content": _text_of(content, f"{where}.content"),
                }
            ]
        else:
            raise TranslationError(
                f"{where}.role: {role!r} is not supported by Anthropic providers", "messages"
            )
        if not blocks:
            raise TranslationError(f"{where}: the message has no content", "messages")
        if turns and turns[-1]["role"] == kind:
            turns[-1]["content"].extend(blocks)  # the Messages API wants turns to alternate
        else:
            turns.append({"role": kind, "content": blocks})
    if not turns:
        raise TranslationError("messages: at least one user message is required", "messages")
    return system, turns


def _tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise TranslationError("tools: must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if (
            not isinstance(tool, Mapping)
            or tool.get("type") != "function"
            or not isinstance(function, Mapping)
        ):
            raise TranslationError(f"tools[{i}]: only function tools are supported", "tools")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError(f"tools[{i}].function.name: a string is required", "tools")
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        entry: dict[str, Any] = {"name": name, "input_schema": schema}
        if isinstance(function.get("description"), str):
            entry["description"] = function["description"]
        out.append(entry)
    return out


def _tool_choice(choice: object, parallel: object) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        out = {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        name = choice["function"].get("name")
        if not isinstance(name, str):
            raise TranslationError("tool_choice.function.name: a string is required", "tool_choice")
        out = {"type": "tool", "name": name}
    else:
        raise TranslationError("tool_choice: not a valid tool choice", "tool_choice")
    if parallel is False:
        out = out or {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


def _positive_int(obj: Mapping[str, Any], field: str) -> int | None:
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TranslationError(f"{field}: must be a positive integer", field)
    return value


def _number(obj: Mapping[str, Any], field: str) -> float | None:
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranslationError(f"{field}: must be a number", field)
    return float(value)


def chat_to_messages(
    obj: Mapping[str, Any], model: str, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """The Messages request for a ``chat.completions`` request body, sent to ``model``.

    Raises:
        TranslationError: the request cannot be expressed (the message says what).
    """
    n = obj.get("n")
    if n is not None and n != 1:
        raise TranslationError("n: Anthropic providers return one choice only", "n")
    if obj.get("logprobs") or obj.get("top_logprobs"):
        raise TranslationError("logprobs: not supported by Anthropic providers", "logprobs")
    fmt = obj.get("response_format")
    if fmt is not None and (not isinstance(fmt, Mapping) or fmt.get("type") != "text"):
        raise TranslationError(
            "response_format: only type text is supported by Anthropic providers",
            "response_format",
        )
    stream = obj.get("stream")
    system, turns = _turns(obj.get("messages"))
    max_tokens = (
        _positive_int(obj, "max_completion_tokens")
        or _positive_int(obj, "max_tokens")
        or default_max_tokens
    )
    out: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
    if system:
        out["system"] = system
    if stream:
        out["stream"] = True
    temperature = _number(obj, "temperature")
    if temperature is not None:
        out["temperature"] = min(max(temperature, 0.0), 1.0)  # OpenAI's range is 0..2
    top_p = _number(obj, "top_p")
    if top_p is not None:
        out["top_p"] = top_p
    stop = obj.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if stop:
            out["stop_sequences"] = list(stop)
    elif stop is not None:
        raise TranslationError("stop: must be a string or a list of strings", "stop")
    if obj.get("tools"):
        out["tools"] = _tools(obj["tools"])
    choice = _tool_choice(obj.get("tool_choice"), obj.get("parallel_tool_calls"))
    if choice is not None and (out.get("tools") or choice["type"] == "none"):
        out["tool_choice"] = choice
    user = obj.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    return out


# -- response -----------------------------------------------------------------------------


def chat_usage(usage: object) -> dict[str, int] | None:
    """Anthropic ``usage`` as OpenAI's (prompt tokens include cache reads and writes)."""
    if not isinstance(usage, Mapping):
        return None

    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    prompt = (
        count("input_tokens")
        + count("cache_creation_input_tokens")
        + count("cache_read_input_tokens")
    )
    completion = count("output_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def finish_reason(stop_reason: object) -> str | None:
    """OpenAI's ``finish_reason`` for Anthropic's ``stop_reason`` (None while not stopped)."""
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(str(stop_reason), "stop")


def _tool_call(block: Mapping[str, Any], index: int | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {
        "id": block.get("id"),
        "type": "function",
        "function": {
            "name": block.get("name"),
            "arguments": json.dumps(block.get("input") or {}, separators=(",", ":")),
        },
    }
    if index is not None:
        call["index"] = index
    return call


def messages_to_chat(doc: object, created: int) -> dict[str, Any]:
    """The ``chat.completion`` for a Messages response.

    Raises:
        MalformedResponse: ``doc`` is not a Messages response.
    """
    if not isinstance(doc, Mapping) or doc.get("type") != "message":
        raise MalformedResponse("the provider's answer is not a Messages response")
    content = doc.get("content")
    if not isinstance(content, list):
        raise MalformedResponse("the provider's answer has no content list")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, Mapping):
            raise MalformedResponse("the provider's answer has a content block that is no object")
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(_tool_call(block))
        # thinking and server-tool blocks have no chat.completion equivalent: left out
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    out: dict[str, Any] = {
        "id": f"chatcmpl-{doc.get('id') or 'anthropic'}",
        "object": "chat.completion",
        "created": created,
        "model": doc.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(doc.get("stop_reason")) or "stop",
            }
        ],
    }
    usage = chat_usage(doc.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out


def error_to_openai(status: int, body: bytes) -> tuple[int, dict[str, Any]]:
    """(status for the client, OpenAI error object) for an Anthropic error answer."""
    message = f"the provider answered HTTP {status}"
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
    error = doc.get("error") if isinstance(doc, Mapping) else None
    if isinstance(error, Mapping):
        if isinstance(error.get("message"), str):
            message = error["message"]
        if isinstance(error.get("type"), str):
            kind = error["type"]
    out_status = 503 if status == OVERLOADED_STATUS else status
    return out_status, {"error": {"message": message, "type": kind, "param": None, "code": None}}


# -- stream -------------------------------------------------------------------------------


class StreamTranslator:
    """Messages stream events in, ``chat.completion.chunk`` events (SSE bytes) out.

    Feed it each event's parsed JSON in order; :attr:`usage` holds the usage so far (input
    tokens from ``message_start``, output tokens from the last ``message_delta``), and
    :attr:`finished` turns true with ``message_stop``. A stream's ``error`` event becomes an
    OpenAI error event, after which the client's stream ends without ``[DONE]``.
    """

    def __init__(self, created: int, include_usage: bool, fallback_id: str = "anthropic") -> None:
        """``include_usage``: whether the client asked for the final usage chunk."""
        self.created = created
        self.include_usage = include_usage
        self.id = f"chatcmpl-{fallback_id}"
        self.model: object = None
        self.usage_in: dict[str, Any] = {}
        self.usage_out: dict[str, Any] = {}
        self.started = False
        self.finished = False
        self.failed: dict[str, Any] | None = None
        """The OpenAI error object of an ``error`` event, once one arrived."""
        self._tools: dict[int, int] = {}
        """Content-block index -> OpenAI tool-call index."""
        self._finish: str | None = None

    @property
    def usage(self) -> dict[str, int] | None:
        """OpenAI usage so far (None before ``message_start``)."""
        if not self.started:
            return None
        return chat_usage({**self.usage_in, **self.usage_out})

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        doc: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            doc["usage"] = None
        return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"

    def feed(self, event: object) -> list[bytes]:
        """The chunks (SSE-framed) that one Messages event makes.

        Raises:
            MalformedResponse: an event that is not a Messages stream event, or one out of
                order (content before ``message_start``).
        """
        if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
            raise MalformedResponse("a stream event is not a Messages event")
        kind = event["type"]
        if kind == "ping":
            return []
        if kind == "error":
            _, self.failed = error_to_openai(500, json.dumps(event).encode())
            return [b"data: " + json.dumps(self.failed).encode() + b"\n\n"]
        if kind == "message_start":
            return self._message_start(event)
        if not self.started:
            raise MalformedResponse(f"{kind} before message_start")
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "content_block_stop":
            return []
        if kind == "message_delta":
            return self._message_delta(event)
        if kind == "message_stop":
            return self._message_stop()
        return []  # event types added later are skipped, as Anthropic's versioning asks

    def _message_start(self, event: Mapping[str, Any]) -> list[bytes]:
        """The stream's first chunk: the assistant role; keeps the id, model and input usage."""
        message = event.get("message")
        if not isinstance(message, Mapping):
            raise MalformedResponse("message_start without a message")
        self.started = True
        if isinstance(message.get("id"), str):
            self.id = f"chatcmpl-{message['id']}"
        self.model = message.get("model")
        if isinstance(message.get("usage"), Mapping):
            self.usage_in = dict(message["usage"])
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, event: Mapping[str, Any]) -> list[bytes]:
        """A tool call's opening chunk, or a text block's first text."""
        block = event.get("content_block")
        index = event.get("index")
        if isinstance(block, Mapping) and block.get("type") == "tool_use":
            if not isinstance(index, int):
                raise MalformedResponse("content_block_start without an index")
            tool_index = self._tools[index] = len(self._tools)
            call = _tool_call({**block, "input": {}}, tool_index)
            call["function"]["arguments"] = ""
            return [self._chunk({"tool_calls": [call]})]
        if isinstance(block, Mapping) and block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _block_delta(self, event: Mapping[str, Any]) -> list[bytes]:
        """Text, or a tool call's arguments so far."""
        delta = event.get("delta")
        if not isinstance(delta, Mapping):
            raise MalformedResponse("content_block_delta without a delta")
        if delta.get("type") == "text_delta":
            return [self._chunk({"content": delta.get("text") or ""})]
        if delta.get("type") == "input_json_delta":
            index = event.get("index")
            call_index = self._tools.get(index) if isinstance(index, int) else None
            if call_index is None:
                raise MalformedResponse("input_json_delta for a block that is no tool_use")
            partial = delta.get("partial_json") or ""
            if not partial:
                return []
            return [
                self._chunk(
                    {"tool_calls": [{"index": call_index, "function": {"arguments": partial}}]}
                )
            ]
        return []  # thinking, signature and citation deltas have no chunk equivalent

    def _message_delta(self, event: Mapping[str, Any]) -> list[bytes]:
        """The output usage, and the finish reason's chunk."""
        delta = event.get("delta")
        usage = event.get("usage")
        if isinstance(usage, Mapping):
            self.usage_out = dict(usage)
        stop = delta.get("stop_reason") if isinstance(delta, Mapping) else None
        finish = finish_reason(stop)
        if finish is None:
            return []
        self._finish = finish
        return [self._chunk({}, finish)]

    def _message_stop(self) -> list[bytes]:
        """The last chunks: a finish reason if none came, the usage chunk, ``[DONE]``."""
        self.finished = True
        out = []
        if self._finish is None:
            out.append(self._chunk({}, "stop"))
        if self.include_usage:
            doc = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage,
            }
            out.append(b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        return out
