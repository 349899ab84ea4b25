"""OpenAI wire types the sim accepts, and the OpenAI-style error body it answers with.

Requests keep unknown fields (``extra="allow"``): clients send many options the sim ignores
(``temperature``, ``stop``, ``logprobs`` ...), and refusing them would break real SDKs. Fields the
sim uses are typed, so a wrong type is a 400, never a 500.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

_ALLOW = ConfigDict(extra="allow")


TokenId = Annotated[int, Field(ge=0, le=2**32 - 1)]
"""A token id: a non-negative 32-bit number (router fuzzing found that -1 made a 500)."""


class ContentPart(BaseModel):
    """One part of a multi-part message; only text parts count towards the prompt."""

    model_config = _ALLOW
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One chat message."""

    model_config = _ALLOW
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text, parts joined."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(p.text or "" for p in self.content)


class StreamOptions(BaseModel):
    """``stream_options``."""

    model_config = _ALLOW
    include_usage: bool | None = False


class _Generation(BaseModel):
    model_config = _ALLOW
    model: str
    max_tokens: int | None = Field(None, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(1, ge=1, le=1)
    seed: int | None = None
    temperature: float | None = None
    top_p: float | None = None

    @property
    def include_usage(self) -> bool:
        """Whether a streaming response ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Generation):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Generation):
    """``POST /v1/completions``; one prompt (text, a one-element list, or token ids)."""

    prompt: str | list[str] | list[TokenId]


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``."""

    model_config = _ALLOW
    model: str
    input: str | list[str] | list[TokenId] | list[list[TokenId]]
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(None, ge=1, le=8192)


class LoadLoraAdapterRequest(BaseModel):
    """``POST /v1/load_lora_adapter``, as vLLM takes it; empty fields are refused with 400."""

    model_config = _ALLOW
    lora_name: str = ""
    lora_path: str = ""


class UnloadLoraAdapterRequest(BaseModel):
    """``POST /v1/unload_lora_adapter``, as vLLM takes it."""

    model_config = _ALLOW
    lora_name: str = ""


ERROR_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    503: "service_unavailable_error",
}


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> bytes:
    """An OpenAI error object: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return json.dumps(body).encode()
