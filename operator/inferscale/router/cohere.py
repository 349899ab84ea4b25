"""Anthropic's Messages shapes <-> Cohere's v2 chat API (``POST /v2/chat``), pure, both ways.

As :mod:`inferscale.router.gemini`: the router's Messages request (already validated) becomes
a Cohere request, and Cohere's answers and stream events become Messages ones.

- Request (:func:`to_cohere`): ``system`` -> a ``system`` message; user turns -> ``user``
  messages (text and image parts), their ``tool_result`` blocks -> ``tool`` messages;
  assistant turns -> ``assistant`` messages with ``tool_calls``; ``max_tokens``,
  ``temperature`` (the client's), ``top_p`` (``p``), ``stop_sequences``, ``seed``; tools in
  OpenAI's shape (Cohere takes them as they are); tool choice ``any`` -> ``REQUIRED``,
  ``none`` -> ``NONE`` (Cohere cannot force one named tool: refused).
- Response (:func:`to_message`): ``message.content`` text and ``message.tool_calls``;
  ``finish_reason`` ``COMPLETE`` -> ``end_turn``, ``MAX_TOKENS`` -> ``max_tokens``,
  ``STOP_SEQUENCE`` -> ``stop_sequence``, ``TOOL_CALL`` -> ``tool_use``; usage from
  ``usage.tokens`` (else ``billed_units``).
- Stream (:class:`CohereEvents`): ``message-start``, ``content-start``/``-delta``/``-end``,
  ``tool-call-start``/``-delta``/``-end`` and ``message-end`` (finish reason and usage) map
  one to one onto Messages events; ``tool-plan-delta`` and citations are skipped.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from inferscale.router.anthropic import MalformedResponse, TranslationError

STOP_REASONS: Final = {
    "COMPLETE": "end_turn",
    "MAX_TOKENS": "max_tokens",
    "STOP_SEQUENCE": "stop_sequence",
    "TOOL_CALL": "tool_use",
}
"""Cohere ``finish_reason`` -> Messages ``stop_reason`` (anything else: ``end_turn``)."""

TOOL_INDEX_BASE: Final = 1_000
"""Cohere numbers text blocks and tool calls apart; tool calls become Messages blocks from here
so the two never share an index."""


def _user_messages(blocks: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "tool_result":
            out.append(
                {"role": "tool", "tool_call_id": block["tool_use_id"], "content": block["content"]}
            )
        elif kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            source = block["source"]
            url = (
                source["url"]
                if source.get("type") == "url"
                else f"data:{source['media_type']};base64,{source['data']}"
            )
            parts.append({"type": "image_url", "image_url": {"url": url}})
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant_message(blocks: list[Mapping[str, Any]]) -> dict[str, Any]:
    texts = [b["text"] for b in blocks if b.get("type") == "text"]
    calls = [
        {
            "id": b["id"],
            "type": "function",
            "function": {"name": b["name"], "arguments": json.dumps(b.get("input") or {})},
        }
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant"}
    if texts:
        message["content"] = [{"type": "text", "text": "".join(texts)}]
    if calls:
        message["tool_calls"] = calls
    return message


def to_cohere(request: Mapping[str, Any], obj: Mapping[str, Any]) -> dict[str, Any]:
    """The v2 chat body for a Messages request; ``obj`` is the client's OpenAI request.

    Raises:
        TranslationError: a tool choice Cohere cannot express.
    """
    messages: list[dict[str, Any]] = []
    if request.get("system"):
        text = "\n".join(block["text"] for block in request["system"])
        messages.append({"role": "system", "content": text})
    for turn in request["messages"]:
        if turn["role"] == "assistant":
            messages.append(_assistant_message(turn["content"]))
        else:
            messages += _user_messages(turn["content"])
    out: dict[str, Any] = {
        "model": request["model"],
        "messages": messages,
        "max_tokens": request["max_tokens"],
    }
    if request.get("stream"):
        out["stream"] = True
    temperature = obj.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        out["temperature"] = temperature
    if "top_p" in request:
        out["p"] = request["top_p"]
    if request.get("stop_sequences"):
        out["stop_sequences"] = request["stop_sequences"]
    seed = obj.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        out["seed"] = seed
    if request.get("tools"):
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool["name"],
                    "parameters": tool["input_schema"],
                    **({"description": tool["description"]} if "description" in tool else {}),
                },
            }
            for tool in request["tools"]
        ]
    choice = (request.get("tool_choice") or {}).get("type")
    if choice == "tool":
        raise TranslationError(
            "tool_choice: Cohere providers cannot force one named function", "tool_choice"
        )
    if choice in ("any", "none"):
        out["tool_choice"] = "REQUIRED" if choice == "any" else "NONE"
    return out


def usage_of(usage: object) -> dict[str, int]:
    """Cohere's ``usage`` as Messages usage (tokens processed, else billed units)."""
    if not isinstance(usage, Mapping):
        return {}
    counts = usage.get("tokens") or usage.get("billed_units")
    if not isinstance(counts, Mapping):
        return {}

    def count(name: str) -> int:
        value = counts.get(name)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

    return {"input_tokens": count("input_tokens"), "output_tokens": count("output_tokens")}


def _tool_use(call: object) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(call, Mapping) or not isinstance(function, Mapping):
        raise MalformedResponse("a tool call without a function")
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except (TypeError, ValueError) as error:
        raise MalformedResponse("a tool call whose arguments are not JSON") from error
    return {
        "type": "tool_use",
        "id": call.get("id") or "call",
        "name": function.get("name"),
        "input": arguments,
    }


def to_message(doc: object, model: str) -> dict[str, Any]:
    """The Messages response for a Cohere v2 chat answer.

    Raises:
        MalformedResponse: ``doc`` is not one.
    """
    message = doc.get("message") if isinstance(doc, Mapping) else None
    if not isinstance(doc, Mapping) or not isinstance(message, Mapping):
        raise MalformedResponse("the provider's answer is not a Cohere chat response")
    content: list[dict[str, Any]] = []
    for part in message.get("content") or []:
        if isinstance(part, Mapping) and part.get("type") == "text":
            content.append({"type": "text", "text": str(part.get("text") or "")})
    content += [_tool_use(call) for call in message.get("tool_calls") or []]
    return {
        "type": "message",
        "id": doc.get("id") or "cohere",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(str(doc.get("finish_reason")), "end_turn"),
        "usage": usage_of(doc.get("usage")),
    }


def _delta_message(event: Mapping[str, Any]) -> Mapping[str, Any]:
    delta = event.get("delta")
    message = delta.get("message") if isinstance(delta, Mapping) else None
    return message if isinstance(message, Mapping) else {}


class CohereEvents:
    """Cohere v2 stream events in, Messages stream events out (see the module docstring)."""

    def __init__(self, model: str) -> None:
        """``model`` names the answer (Cohere's events do not)."""
        self.model = model

    def feed(self, event: object) -> list[dict[str, Any]]:
        """The Messages events one Cohere event makes.

        Raises:
            MalformedResponse: the event is not a Cohere stream event.
        """
        if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
            raise MalformedResponse("a stream event is not a Cohere event")
        kind = event["type"]
        found = event.get("index")
        index = found if isinstance(found, int) else 0
        message = _delta_message(event)
        if kind == "message-start":
            start: dict[str, Any] = {
                "id": event.get("id") or "cohere",
                "model": self.model,
                "usage": {},
            }
            return [{"type": "message_start", "message": start}]
        if kind == "content-start":
            block = {"type": "text", "text": ""}
            return [{"type": "content_block_start", "index": index, "content_block": block}]
        if kind == "content-delta":
            content = message.get("content")
            text = content.get("text") if isinstance(content, Mapping) else None
            delta = {"type": "text_delta", "text": text if isinstance(text, str) else ""}
            return [{"type": "content_block_delta", "index": index, "delta": delta}]
        if kind in ("content-end", "tool-call-end"):
            at = index if kind == "content-end" else TOOL_INDEX_BASE + index
            return [{"type": "content_block_stop", "index": at}]
        if kind in ("tool-call-start", "tool-call-delta"):
            return self._tool(kind, TOOL_INDEX_BASE + index, message)
        if kind == "message-end":
            end = event.get("delta")
            end = end if isinstance(end, Mapping) else {}
            stop = STOP_REASONS.get(str(end.get("finish_reason")), "end_turn")
            usage = usage_of(end.get("usage"))
            return [
                {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": usage},
                {"type": "message_stop"},
            ]
        return []  # tool plans, citations and event types added later

    def _tool(self, kind: str, index: int, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        call = message.get("tool_calls")
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(call, Mapping) or not isinstance(function, Mapping):
            raise MalformedResponse(f"{kind} without a tool call")
        arguments = function.get("arguments") or ""
        out = []
        if kind == "tool-call-start":
            block = {"type": "tool_use", "id": call.get("id"), "name": function.get("name")}
            out.append({"type": "content_block_start", "index": index, "content_block": block})
        if arguments:
            delta = {"type": "input_json_delta", "partial_json": str(arguments)}
            out.append({"type": "content_block_delta", "index": index, "delta": delta})
        return out
