"""Mock OpenAI and Anthropic APIs on 127.0.0.1: real HTTP, the recorded response shapes.

Each mock is an aiohttp server in a background thread (``tests.servers.ServerThread``). It checks
the key the way the real API does (``Authorization: Bearer`` for OpenAI, ``x-api-key`` and
``anthropic-version`` for Anthropic), answers in the shapes recorded in
``tests/fixtures/providers/`` (ids, object names, usage, stop reasons, event names and order),
echoes the last user message so tests can tell answers apart, and records every request.
``fault`` makes it misbehave the ways providers do: ``429``, ``500``, ``529`` (Anthropic),
``timeout`` (no answer for ``delay`` seconds), ``malformed`` (an event stream that is not one,
or a body that is not JSON), ``cut`` (the connection drops after the first chunk),
``error_event`` (a stream that starts with an error event), ``slow`` (``delay`` seconds
before each answer, which then succeeds), ``drip`` (OpenAI: the answer starts at once and
drips, a stream one event and a body one byte every ``delay`` seconds). ``keys`` are the keys
it accepts (the first by default); a key in ``rate_limited`` always gets 429, with that
``Retry-After`` (or none).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from inferscale.serving import serve_app
from tests.servers import ServerThread

KEY = "sk-test-provider-key-0123456789"


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and "text" in p
                )
    return ""


class MockProvider(ServerThread):
    """Shared plumbing: fault injection, request log, a stop-able server."""

    name = "mock-provider"

    def __init__(self, key: str = KEY, host: str = "127.0.0.1") -> None:
        self.key = key
        self.keys = {key}
        """Every key it accepts."""
        self.rate_limited: dict[str, str | None] = {}
        """Key -> the ``Retry-After`` its 429 carries (None: no header)."""
        self.host = host
        """Address to listen on: loopback, or the pod network's gateway for routers in pods."""
        self.fault: str | None = None
        self.fault_times: int | None = None
        """Misbehave this many times, then behave (None: always)."""
        self.delay = 5.0
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        super().__init__()

    async def start_server(self) -> tuple[Any, int]:
        app = web.Application()
        self.routes(app)
        return await serve_app(app, self.host, 0, shutdown_grace_seconds=0.5)

    @property
    def url(self) -> str:
        """Where routers reach it."""
        return f"http://{self.host}:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def take_fault(self) -> str | None:
        if self.fault is None:
            return None
        if self.fault_times is not None:
            if self.fault_times <= 0:
                return None
            self.fault_times -= 1
        return self.fault

    def count(self) -> int:
        return len(self.requests)


class MockOpenAI(MockProvider):
    """``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` as OpenAI answers."""

    name = "mock-openai"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)

    def presented(self, request: web.Request) -> str:
        """The key the request carries, where OpenAI's API wants it."""
        return request.headers.get("Authorization", "").removeprefix("Bearer ")

    def _fail(self, status: int, message: str, kind: str) -> web.Response:
        doc = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return web.json_response(doc, status=status)

    async def _prologue(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        presented = self.presented(request)
        if presented not in self.keys:
            return body, self._fail(401, "Incorrect API key provided.", "invalid_request_error")
        if presented in self.rate_limited:
            resp = self._fail(429, "Rate limit reached for requests", "requests")
            if self.rate_limited[presented] is not None:
                resp.headers["Retry-After"] = str(self.rate_limited[presented])
            return body, resp
        fault = self.take_fault()
        if fault == "429":
            return body, self._fail(429, "Rate limit reached for requests", "requests")
        if fault == "500":
            return body, self._fail(500, "The server had an error", "server_error")
        if fault == "400":
            return body, self._fail(400, "Invalid 'messages': too long.", "invalid_request_error")
        if fault in ("timeout", "slow"):
            await asyncio.sleep(self.delay)
            if fault == "timeout":
                return body, self._fail(504, "late", "server_error")
        if fault == "malformed":
            if body.get("stream"):
                resp = web.Response(
                    body=b"data: {this is not json\n\n", content_type="text/event-stream"
                )
            else:
                resp = web.Response(body=b"<html>oops</html>", content_type="application/json")
            return body, resp
        if fault in ("cut", "drip"):
            body[f"_{fault}"] = True
        return body, None

    async def _drip_json(self, request: web.Request, doc: dict[str, Any]) -> web.StreamResponse:
        """A 200 whose JSON body comes one byte every ``delay`` seconds."""
        data = json.dumps(doc).encode()
        resp = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Length": str(len(data))}
        )
        await resp.prepare(request)
        for i in range(len(data)):
            await resp.write(data[i : i + 1])
            await asyncio.sleep(self.delay)
        return resp

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, refusal = await self._prologue(request)
        if refusal is not None:
            return refusal
        if request.path.endswith("/completions") and "messages" not in body:
            text = f"mock:{body.get('prompt')}"
        else:
            text = f"mock:{_last_user_text(body.get('messages') or [])}"
        words = text.split(":")
        usage = {
            "prompt_tokens": 9,
            "completion_tokens": len(words),
            "total_tokens": 9 + len(words),
        }
        model = body.get("model")
        if "messages" not in body and not body.get("stream"):
            return web.json_response(
                {
                    "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
                    "object": "text_completion",
                    "created": 1589478378,
                    "model": model,
                    "choices": [
                        {"text": text, "index": 0, "logprobs": None, "finish_reason": "length"}
                    ],
                    "usage": usage,
                }
            )
        if not body.get("stream"):
            answer = {
                "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
                "object": "chat.completion",
                "created": 1741569952,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
                "service_tier": "default",
            }
            if body.get("_drip"):
                return await self._drip_json(request, answer)
            return web.json_response(answer)
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            doc: dict[str, Any] = {
                "id": "chatcmpl-123",
                "object": "chat.completion.chunk",
                "created": 1694268190,
                "model": model,
                "system_fingerprint": "fp_44709d6fcb",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                doc["usage"] = None
            doc.update(extra)
            return b"data: " + json.dumps(doc).encode() + b"\n\n"

        drip = self.delay if body.get("_drip") else 0.0
        await resp.write(chunk({"role": "assistant", "content": ""}))
        if body.get("_cut"):
            await resp.write(chunk({"content": words[0]}))
            assert request.transport is not None
            request.transport.close()
            return resp
        for i, word in enumerate(words):
            await asyncio.sleep(drip)
            await resp.write(chunk({"content": word if i == 0 else ":" + word}))
        await asyncio.sleep(drip)
        await resp.write(chunk({}, "stop"))
        if include_usage:
            doc = {
                "id": "chatcmpl-123",
                "object": "chat.completion.chunk",
                "created": 1694268190,
                "model": model,
                "system_fingerprint": "fp_44709d6fcb",
                "choices": [],
                "usage": usage,
            }
            await resp.write(b"data: " + json.dumps(doc).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body, refusal = await self._prologue(request)
        if refusal is not None:
            return refusal
        inputs = body.get("input")
        n = len(inputs) if isinstance(inputs, list) else 1
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.0023064255, -0.009327292]}
                    for i in range(n)
                ],
                "model": body.get("model"),
                "usage": {"prompt_tokens": 8, "total_tokens": 8},
            }
        )


class MockAnthropic(MockProvider):
    """``POST /v1/messages`` as the Messages API answers, streaming included."""

    name = "mock-anthropic"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.messages)

    def _fail(self, status: int, kind: str, message: str) -> web.Response:
        return web.json_response(
            {"type": "error", "error": {"type": kind, "message": message}}, status=status
        )

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if request.headers.get("x-api-key") not in self.keys:
            return self._fail(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._fail(400, "invalid_request_error", "anthropic-version: header is required")
        if not isinstance(body.get("max_tokens"), int):
            return self._fail(400, "invalid_request_error", "max_tokens: Field required")
        roles = [m["role"] for m in body.get("messages") or []]
        if any(a == b for a, b in zip(roles, roles[1:], strict=False)):
            return self._fail(400, "invalid_request_error", "roles must alternate")
        fault = self.take_fault()
        if fault == "529":
            return self._fail(529, "overloaded_error", "Overloaded")
        if fault == "429":
            return self._fail(429, "rate_limit_error", "Number of request tokens has exceeded")
        if fault == "500":
            return self._fail(500, "api_error", "Internal server error")
        if fault == "400":
            return self._fail(400, "invalid_request_error", "prompt is too long: 210000 tokens")
        if fault in ("timeout", "slow"):
            await asyncio.sleep(self.delay)
            if fault == "timeout":
                return self._fail(504, "api_error", "late")
        text = f"claude:{_last_user_text(body.get('messages') or [])}"
        usage_in = 25
        tool = (body.get("tools") or [None])[0]
        stop = "tool_use" if tool is not None else "end_turn"
        if not body.get("stream"):
            if fault == "malformed":
                return web.Response(
                    body=b'{"type": "not-a-message"}', content_type="application/json"
                )
            content: list[dict[str, Any]] = [{"type": "text", "text": text}]
            if tool is not None:
                content.append(
                    {
                        "type": "tool_use",
                        "id": "toolu_01A09q90qw90lq917835lq9",
                        "name": tool["name"],
                        "input": {"location": "San Francisco, CA"},
                    }
                )
            return web.json_response(
                {
                    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": usage_in,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": 7,
                    },
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def event(name: str, doc: dict[str, Any]) -> None:
            await resp.write(f"event: {name}\ndata: {json.dumps(doc)}\n\n".encode())

        if fault == "malformed":
            await resp.write(b"event: message_start\ndata: {not json\n\n")
            return resp
        if fault == "error_event":
            await event(
                "error",
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            )
            return resp
        await event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": body["model"],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": usage_in, "output_tokens": 1},
                },
            },
        )
        await event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        await event("ping", {"type": "ping"})
        if fault == "cut":
            await event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "claude"},
                },
            )
            assert request.transport is not None
            request.transport.close()
            return resp
        if fault == "error_mid":
            await event(
                "error",
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            )
            return resp
        for i, part in enumerate(text.split(":")):
            piece = part if i == 0 else ":" + part
            await event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
        await event("content_block_stop", {"type": "content_block_stop", "index": 0})
        if tool is not None:
            await event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {
                        "type": "tool_use",
                        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                        "name": tool["name"],
                        "input": {},
                    },
                },
            )
            for piece in ('{"location":', ' "San Francisco, CA"}'):
                await event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
            await event("content_block_stop", {"type": "content_block_stop", "index": 1})
        await event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 15},
            },
        )
        await event("message_stop", {"type": "message_stop"})
        return resp
