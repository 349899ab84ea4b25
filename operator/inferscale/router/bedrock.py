"""Anthropic's Messages shapes <-> AWS Bedrock's Converse API, and its event-stream framing (pure).

As :mod:`inferscale.router.gemini`: the router's Messages request (already validated) becomes a
Converse request (``POST /model/{modelId}/converse``, ``/converse-stream``), and Bedrock's
answers and stream events become Messages ones.

- Request (:func:`to_converse`): turns -> ``messages`` of content blocks (``text``, ``image``
  with base64 ``bytes``, ``toolUse``, ``toolResult``); ``system``; ``max_tokens``,
  ``temperature``, ``top_p``, ``stop_sequences`` -> ``inferenceConfig``; tools ->
  ``toolConfig`` (``toolSpec`` with ``inputSchema.json``), tool choice ``auto``/``any``/
  ``tool``. Image URLs (not ``data:``) and ``tool_choice: none`` (Converse has no such choice)
  are refused.
- Response (:func:`to_message`): ``output.message.content``; ``stopReason`` as Anthropic's
  (``guardrail_intervened`` and ``content_filtered`` -> ``refusal``); ``usage`` (cache reads
  and writes count as input).
- Stream (:class:`ConverseEvents`): ``messageStart``, ``contentBlockStart`` (tool calls only:
  a text block starts with its first delta), ``contentBlockDelta``, ``contentBlockStop``,
  ``messageStop`` (the stop reason) and ``metadata`` (the usage, after ``messageStop``: the
  message ends there); an exception frame is an error event.
- Framing (:class:`EventStreamDecoder`): the stream is AWS's binary event-stream
  (``application/vnd.amazon.eventstream``): frames of a prelude (total and headers length and
  their CRC32), headers, a JSON payload and the frame's CRC32. Each frame becomes an
  :class:`~inferscale.router.sse.SseEvent` whose data is ``{"<event type>": payload}`` (as
  AWS's SDKs present events), so the router reads it like any other stream. Checksums are
  CRC32 (``zlib``), not cryptography; signing is :mod:`inferscale.router.aws`.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from typing import Any, Final

from inferscale.router.anthropic import MalformedResponse, TranslationError
from inferscale.router.sse import MalformedStream, SseEvent

CONTENT_TYPE: Final = "application/vnd.amazon.eventstream"

STOP_REASONS: Final = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "guardrail_intervened": "refusal",
    "content_filtered": "refusal",
    "model_context_window_exceeded": "model_context_window_exceeded",
}
"""Converse ``stopReason`` -> Messages ``stop_reason`` (anything else: ``end_turn``)."""

MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
"""Largest event-stream frame accepted (AWS's own limit)."""

_PRELUDE: Final = struct.Struct(">III")
_HEADER_VALUE_SIZES: Final = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
"""Fixed value sizes by header type (6: bytes and 7: string carry a 2-byte length)."""


def _block(block: Mapping[str, Any]) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"text": block["text"]}
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") != "base64":
            raise TranslationError(
                "image_url: Bedrock providers take data: URLs only (base64 images)", "messages"
            )
        image_format = str(source["media_type"]).removeprefix("image/")
        return {"image": {"format": image_format, "source": {"bytes": source["data"]}}}
    if kind == "tool_use":
        return {
            "toolUse": {
                "toolUseId": block["id"],
                "name": block["name"],
                "input": block.get("input") or {},
            }
        }
    if kind == "tool_result":
        return {
            "toolResult": {
                "toolUseId": block["tool_use_id"],
                "content": [{"text": block["content"]}],
            }
        }
    raise TranslationError(f"content of type {kind!r} is not supported by Bedrock", "messages")


def _tool_config(request: Mapping[str, Any]) -> dict[str, Any] | None:
    choice = request.get("tool_choice") or {}
    if choice.get("type") == "none":
        raise TranslationError(
            "tool_choice: none is not supported by Bedrock providers (leave the tools out)",
            "tool_choice",
        )
    if not request.get("tools"):
        return None
    tools = []
    for tool in request["tools"]:
        spec: dict[str, Any] = {"name": tool["name"], "inputSchema": {"json": tool["input_schema"]}}
        if "description" in tool:
            spec["description"] = tool["description"]
        tools.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": tools}
    if choice.get("type") == "any":
        config["toolChoice"] = {"any": {}}
    elif choice.get("type") == "tool":
        config["toolChoice"] = {"tool": {"name": choice["name"]}}
    elif choice.get("type") == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


def to_converse(request: Mapping[str, Any]) -> dict[str, Any]:
    """The Converse body for a Messages request (as ``chat_to_messages`` makes it).

    Raises:
        TranslationError: the request has what Converse cannot take.
    """
    out: dict[str, Any] = {
        "messages": [
            {"role": turn["role"], "content": [_block(b) for b in turn["content"]]}
            for turn in request["messages"]
        ]
    }
    if request.get("system"):
        out["system"] = [{"text": block["text"]} for block in request["system"]]
    config: dict[str, Any] = {"maxTokens": request["max_tokens"]}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP")):
        if ours in request:
            config[theirs] = request[ours]
    if request.get("stop_sequences"):
        config["stopSequences"] = request["stop_sequences"]
    out["inferenceConfig"] = config
    tools = _tool_config(request)
    if tools is not None:
        out["toolConfig"] = tools
    return out


def usage_of(usage: object) -> dict[str, int]:
    """Converse ``usage`` as Messages usage (cache reads and writes are input)."""
    if not isinstance(usage, Mapping):
        return {}

    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return {
        "input_tokens": count("inputTokens"),
        "cache_read_input_tokens": count("cacheReadInputTokens"),
        "cache_creation_input_tokens": count("cacheWriteInputTokens"),
        "output_tokens": count("outputTokens"),
    }


def _content(block: object) -> dict[str, Any] | None:
    if not isinstance(block, Mapping):
        raise MalformedResponse("the provider's answer has a content block that is no object")
    if isinstance(block.get("text"), str):
        return {"type": "text", "text": block["text"]}
    use = block.get("toolUse")
    if isinstance(use, Mapping):
        if not isinstance(use.get("name"), str):
            raise MalformedResponse("a toolUse without a name")
        return {
            "type": "tool_use",
            "id": use.get("toolUseId") or "tooluse",
            "name": use["name"],
            "input": use.get("input") or {},
        }
    return None  # reasoning and guard content have no chat.completion equivalent


def to_message(doc: object, model: str) -> dict[str, Any]:
    """The Messages response for a Converse answer.

    Raises:
        MalformedResponse: ``doc`` is not one.
    """
    output = doc.get("output") if isinstance(doc, Mapping) else None
    message = output.get("message") if isinstance(output, Mapping) else None
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(doc, Mapping) or not isinstance(content, list):
        raise MalformedResponse("the provider's answer is not a Converse response")
    blocks = [found for block in content if (found := _content(block)) is not None]
    return {
        "type": "message",
        "id": "bedrock",
        "model": model,
        "content": blocks,
        "stop_reason": STOP_REASONS.get(str(doc.get("stopReason")), "end_turn"),
        "usage": usage_of(doc.get("usage")),
    }


class ConverseEvents:
    """Converse stream events (``{"<type>": payload}``) in, Messages stream events out."""

    def __init__(self, model: str) -> None:
        """``model`` names the answer (Converse events do not)."""
        self.model = model
        self.open: set[int] = set()
        """Content blocks started (text blocks start with their first delta)."""

    def feed(self, doc: object) -> list[dict[str, Any]]:
        """The Messages events one Converse event makes.

        Raises:
            MalformedResponse: not a Converse stream event.
        """
        if not isinstance(doc, Mapping) or len(doc) != 1:
            raise MalformedResponse("a stream event is not a Converse event")
        ((kind, event),) = doc.items()
        if not isinstance(event, Mapping):
            raise MalformedResponse(f"{kind} is not an object")
        index = event.get("contentBlockIndex")
        index = index if isinstance(index, int) else 0
        if kind == "messageStart":
            start = {"id": "bedrock", "model": self.model, "usage": {}}
            return [{"type": "message_start", "message": start}]
        if kind == "contentBlockStart":
            return self._start(index, event.get("start"))
        if kind == "contentBlockDelta":
            return self._delta(index, event.get("delta"))
        if kind == "contentBlockStop":
            self.open.discard(index)
            return [{"type": "content_block_stop", "index": index}]
        if kind == "messageStop":
            stop = STOP_REASONS.get(str(event.get("stopReason")), "end_turn")
            return [{"type": "message_delta", "delta": {"stop_reason": stop}}]
        if kind == "metadata":
            usage = usage_of(event.get("usage"))
            return [
                {"type": "message_delta", "delta": {}, "usage": usage},
                {"type": "message_stop"},
            ]
        if kind == "exception":
            message = event.get("message")
            error = {
                "type": str(event.get("type") or "api_error"),
                "message": message if isinstance(message, str) else "the provider sent an error",
            }
            return [{"type": "error", "error": error}]
        return []  # event types added later

    def _start(self, index: int, start: object) -> list[dict[str, Any]]:
        use = start.get("toolUse") if isinstance(start, Mapping) else None
        if not isinstance(use, Mapping):
            return []
        self.open.add(index)
        block = {"type": "tool_use", "id": use.get("toolUseId"), "name": use.get("name")}
        return [{"type": "content_block_start", "index": index, "content_block": block}]

    def _delta(self, index: int, delta: object) -> list[dict[str, Any]]:
        if not isinstance(delta, Mapping):
            raise MalformedResponse("contentBlockDelta without a delta")
        out: list[dict[str, Any]] = []
        if isinstance(delta.get("text"), str):
            if index not in self.open:
                self.open.add(index)
                block = {"type": "text", "text": ""}
                out.append({"type": "content_block_start", "index": index, "content_block": block})
            text = {"type": "text_delta", "text": delta["text"]}
            out.append({"type": "content_block_delta", "index": index, "delta": text})
        use = delta.get("toolUse")
        if isinstance(use, Mapping) and isinstance(use.get("input"), str) and use["input"]:
            partial = {"type": "input_json_delta", "partial_json": use["input"]}
            out.append({"type": "content_block_delta", "index": index, "delta": partial})
        return out


def _headers(raw: bytes) -> dict[str, str]:
    """An event-stream frame's headers; only string values are kept (the rest are skipped)."""
    out: dict[str, str] = {}
    at = 0
    try:
        while at < len(raw):
            size = raw[at]
            name = raw[at + 1 : at + 1 + size].decode()
            kind = raw[at + 1 + size]
            at += 2 + size
            if kind in (6, 7):
                (length,) = struct.unpack_from(">H", raw, at)
                value = raw[at + 2 : at + 2 + length]
                at += 2 + length
                if kind == 7:
                    out[name] = value.decode()
            elif kind in _HEADER_VALUE_SIZES:
                at += _HEADER_VALUE_SIZES[kind]
            else:
                raise MalformedStream(f"an event-stream header of unknown type {kind}")
    except (IndexError, struct.error, UnicodeDecodeError) as error:
        raise MalformedStream("an event-stream frame's headers are cut or not UTF-8") from error
    if at != len(raw):
        raise MalformedStream("an event-stream frame's headers overrun their length")
    return out


class EventStreamDecoder:
    """Bytes of an AWS event stream in, complete events out (see the module docstring)."""

    def __init__(self) -> None:
        """Nothing buffered yet."""
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[SseEvent]:
        """The events the frames completed by ``data`` make.

        Raises:
            MalformedStream: a checksum that does not match, a frame too large or cut.
        """
        self.buffer += data
        out = []
        while len(self.buffer) >= _PRELUDE.size:
            total, headers_size, prelude_crc = _PRELUDE.unpack_from(self.buffer)
            if zlib.crc32(self.buffer[:8]) != prelude_crc:
                raise MalformedStream("an event-stream prelude's checksum does not match")
            if total > MAX_FRAME_BYTES or total < 16 + headers_size:
                raise MalformedStream(f"an event-stream frame of {total} bytes")
            if len(self.buffer) < total:
                break
            frame = bytes(self.buffer[:total])
            del self.buffer[:total]
            (frame_crc,) = struct.unpack_from(">I", frame, total - 4)
            if zlib.crc32(frame[:-4]) != frame_crc:
                raise MalformedStream("an event-stream frame's checksum does not match")
            headers = _headers(frame[12 : 12 + headers_size])
            out.append(_event(headers, frame[12 + headers_size : -4]))
        return out


def _event(headers: Mapping[str, str], payload: bytes) -> SseEvent:
    try:
        body = json.loads(payload) if payload else {}
    except (ValueError, RecursionError) as error:
        raise MalformedStream("an event-stream payload is not JSON") from error
    kind = headers.get(":message-type", "event")
    if kind == "event":
        name = headers.get(":event-type", "")
        return SseEvent(name, json.dumps({name: body}))
    message = body.get("message") if isinstance(body, Mapping) else None
    exception = {
        "type": headers.get(":exception-type") or headers.get(":error-code"),
        "message": message,
    }
    return SseEvent("exception", json.dumps({"exception": exception}))
