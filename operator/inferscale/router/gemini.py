"""Anthropic's Messages shapes <-> Google's Gemini API (generateContent), pure, both directions.

The router translates an OpenAI chat request once into a Messages request
(:func:`inferscale.router.anthropic.chat_to_messages`: it validates the request and turns
messages into alternating turns of blocks), and this module turns that into a Gemini request;
Gemini's answers and stream chunks come back as a Messages response and Messages stream events,
which :mod:`inferscale.router.anthropic` turns into OpenAI's. One translation to OpenAI, every
dialect that speaks in turns of blocks (Gemini, Vertex AI, Cohere) reuses it.

- Request (:func:`to_gemini`): ``system`` -> ``systemInstruction``; turns -> ``contents`` with
  roles ``user``/``model``; text, ``data:`` images (``inlineData``), ``tool_use``
  (``functionCall``) and ``tool_result`` (``functionResponse``, named after the call it
  answers) parts; ``max_tokens``, ``temperature``, ``top_p``, ``stop_sequences`` ->
  ``generationConfig``; tools -> ``functionDeclarations``; tool choice -> ``toolConfig``.
  Image URLs other than ``data:`` are refused (Gemini reads only its own file URIs).
- Response (:func:`to_message`): candidate 0's parts; ``finishReason`` ``STOP`` -> ``end_turn``
  (``tool_use`` when it called a function), ``MAX_TOKENS`` -> ``max_tokens``, the safety
  reasons -> ``refusal``; ``usageMetadata`` -> usage (thinking tokens count as output).
- Stream (:class:`GeminiEvents`): each ``streamGenerateContent?alt=sse`` chunk is a whole
  response fragment; text parts become one text block's deltas, a function call a tool block
  of its own; the chunk with ``finishReason`` ends the message.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from inferscale.router.anthropic import MalformedResponse, TranslationError

STOP_REASONS: Final = {
    "STOP": "end_turn",
    "MAX_TOKENS": "max_tokens",
    "SAFETY": "refusal",
    "RECITATION": "refusal",
    "BLOCKLIST": "refusal",
    "PROHIBITED_CONTENT": "refusal",
    "SPII": "refusal",
    "IMAGE_SAFETY": "refusal",
}
"""Gemini ``finishReason`` -> Messages ``stop_reason`` (anything else: ``end_turn``)."""

TOOL_MODES: Final = {"auto": "AUTO", "any": "ANY", "none": "NONE", "tool": "ANY"}


def _part(block: Mapping[str, Any], names: dict[str, str]) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"text": block["text"]}
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") != "base64":
            raise TranslationError(
                "image_url: Gemini providers take data: URLs only (base64 images)", "messages"
            )
        return {"inlineData": {"mimeType": source["media_type"], "data": source["data"]}}
    if kind == "tool_use":
        names[block["id"]] = block["name"]
        return {"functionCall": {"name": block["name"], "args": block.get("input") or {}}}
    if kind == "tool_result":
        name = names.get(block["tool_use_id"])
        if name is None:
            raise TranslationError(
                f"tool message: no earlier tool call has id {block['tool_use_id']!r}", "messages"
            )
        return {"functionResponse": {"name": name, "response": {"content": block["content"]}}}
    raise TranslationError(f"content of type {kind!r} is not supported by Gemini", "messages")


def _tool_config(choice: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {"mode": TOOL_MODES.get(str(choice.get("type")), "AUTO")}
    if choice.get("type") == "tool":
        config["allowedFunctionNames"] = [choice["name"]]
    return {"functionCallingConfig": config}


def to_gemini(request: Mapping[str, Any], temperature: float | None = None) -> dict[str, Any]:
    """The Gemini ``generateContent`` body for a Messages request.

    ``request`` is as ``chat_to_messages`` makes it; ``temperature`` is the client's own
    (Gemini's range is OpenAI's 0..2, which the Messages request clamped).

    Raises:
        TranslationError: the request has what Gemini cannot take.
    """
    names: dict[str, str] = {}
    contents = [
        {
            "role": "model" if turn["role"] == "assistant" else "user",
            "parts": [_part(block, names) for block in turn["content"]],
        }
        for turn in request["messages"]
    ]
    out: dict[str, Any] = {"contents": contents}
    if request.get("system"):
        out["systemInstruction"] = {"parts": [{"text": b["text"]} for b in request["system"]]}
    config: dict[str, Any] = {"maxOutputTokens": request["max_tokens"]}
    if temperature is not None:
        config["temperature"] = temperature
    if "top_p" in request:
        config["topP"] = request["top_p"]
    if request.get("stop_sequences"):
        config["stopSequences"] = request["stop_sequences"]
    out["generationConfig"] = config
    if request.get("tools"):
        declarations = []
        for tool in request["tools"]:
            declaration = {"name": tool["name"], "parameters": tool["input_schema"]}
            if "description" in tool:
                declaration["description"] = tool["description"]
            declarations.append(declaration)
        out["tools"] = [{"functionDeclarations": declarations}]
    if request.get("tool_choice"):
        out["toolConfig"] = _tool_config(request["tool_choice"])
    return out


def _count(usage: Mapping[str, Any], name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_of(doc: Mapping[str, Any]) -> dict[str, int] | None:
    """``usageMetadata`` as Messages usage (thinking tokens are billed as output)."""
    usage = doc.get("usageMetadata")
    if not isinstance(usage, Mapping):
        return None
    return {
        "input_tokens": _count(usage, "promptTokenCount"),
        "output_tokens": _count(usage, "candidatesTokenCount")
        + _count(usage, "thoughtsTokenCount"),
    }


def _candidate(doc: object) -> tuple[Mapping[str, Any], list[Mapping[str, Any]]]:
    """(candidate 0 or {}, its parts); a prompt blocked before any candidate has none."""
    if not isinstance(doc, Mapping):
        raise MalformedResponse("the provider's answer is not a Gemini response")
    candidates = doc.get("candidates")
    if candidates is None and ("usageMetadata" in doc or "promptFeedback" in doc):
        return {}, []
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], Mapping):
        raise MalformedResponse("the provider's answer has no candidates")
    candidate = candidates[0]
    content = candidate.get("content") or {}
    parts = content.get("parts") if isinstance(content, Mapping) else None
    if parts is None:
        return candidate, []
    if not isinstance(parts, list) or not all(isinstance(p, Mapping) for p in parts):
        raise MalformedResponse("the provider's answer has parts that are not objects")
    return candidate, parts


def _stop_reason(candidate: Mapping[str, Any], doc: Mapping[str, Any], called: bool) -> str | None:
    reason = candidate.get("finishReason")
    if reason is None:
        feedback = doc.get("promptFeedback")
        return "refusal" if isinstance(feedback, Mapping) and feedback.get("blockReason") else None
    if called and reason == "STOP":
        return "tool_use"
    return STOP_REASONS.get(str(reason), "end_turn")


def _tool_block(part: Mapping[str, Any], index: int) -> dict[str, Any]:
    call = part["functionCall"]
    if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
        raise MalformedResponse("a functionCall without a name")
    call_id = call.get("id") if isinstance(call.get("id"), str) else f"call_{index}"
    return {
        "type": "tool_use",
        "id": call_id,
        "name": call["name"],
        "input": call.get("args") or {},
    }


def to_message(doc: object, model: str) -> dict[str, Any]:
    """The Messages response for a Gemini ``generateContent`` answer.

    Raises:
        MalformedResponse: ``doc`` is not a Gemini response.
    """
    candidate, parts = _candidate(doc)
    assert isinstance(doc, Mapping)
    content: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        if isinstance(part.get("text"), str) and not part.get("thought"):
            content.append({"type": "text", "text": part["text"]})
        elif "functionCall" in part:
            content.append(_tool_block(part, index))
    called = any(block["type"] == "tool_use" for block in content)
    return {
        "type": "message",
        "id": doc.get("responseId") or "gemini",
        "model": doc.get("modelVersion") or model,
        "content": content,
        "stop_reason": _stop_reason(candidate, doc, called) or "end_turn",
        "usage": usage_of(doc) or {},
    }


def error_event(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A Gemini error object (``{"error": {"code", "message", "status"}}``) as a Messages one."""
    error = doc.get("error")
    message = error.get("message") if isinstance(error, Mapping) else None
    kind = error.get("status") if isinstance(error, Mapping) else None
    return {
        "type": "error",
        "error": {
            "type": str(kind or "api_error").lower(),
            "message": message if isinstance(message, str) else "the provider sent an error",
        },
    }


class GeminiEvents:
    """Gemini stream chunks in, Messages stream events out (see the module docstring)."""

    def __init__(self, model: str) -> None:
        """``model`` names the answer when a chunk does not."""
        self.model = model
        self.started = False
        self.text_index: int | None = None
        """The open text block's index (None: none open)."""
        self.blocks = 0
        self.called = False
        self.usage: dict[str, int] = {}

    def feed(self, doc: object) -> list[dict[str, Any]]:
        """The Messages events one chunk makes.

        Raises:
            MalformedResponse: the chunk is not a Gemini response.
        """
        if isinstance(doc, Mapping) and "error" in doc:
            return [error_event(doc)]
        candidate, parts = _candidate(doc)
        assert isinstance(doc, Mapping)
        self.usage = usage_of(doc) or self.usage
        out: list[dict[str, Any]] = []
        if not self.started:
            self.started = True
            message = {
                "id": doc.get("responseId") or "gemini",
                "model": doc.get("modelVersion") or self.model,
                "usage": {"input_tokens": self.usage.get("input_tokens", 0)},
            }
            out.append({"type": "message_start", "message": message})
        for part in parts:
            if isinstance(part.get("text"), str) and not part.get("thought"):
                out += self._text(part["text"])
            elif "functionCall" in part:
                out += self._tool(part)
        stop = _stop_reason(candidate, doc, self.called)
        if stop is not None:
            out += self._close_text()
            out.append(
                {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": self.usage}
            )
            out.append({"type": "message_stop"})
        return out

    def _text(self, text: str) -> list[dict[str, Any]]:
        out = []
        if self.text_index is None:
            self.text_index = self.blocks
            self.blocks += 1
            block = {"type": "text", "text": ""}
            out.append(
                {"type": "content_block_start", "index": self.text_index, "content_block": block}
            )
        delta = {"type": "text_delta", "text": text}
        out.append({"type": "content_block_delta", "index": self.text_index, "delta": delta})
        return out

    def _close_text(self) -> list[dict[str, Any]]:
        if self.text_index is None:
            return []
        index, self.text_index = self.text_index, None
        return [{"type": "content_block_stop", "index": index}]

    def _tool(self, part: Mapping[str, Any]) -> list[dict[str, Any]]:
        out = self._close_text()
        index = self.blocks
        self.blocks += 1
        self.called = True
        block = _tool_block(part, index)
        arguments = json.dumps(block.pop("input"), separators=(",", ":"))
        out.append({"type": "content_block_start", "index": index, "content_block": block})
        delta = {"type": "input_json_delta", "partial_json": arguments}
        out.append({"type": "content_block_delta", "index": index, "delta": delta})
        out.append({"type": "content_block_stop", "index": index})
        return out
