"""Mock Gemini, Vertex AI, Cohere and Azure OpenAI APIs on 127.0.0.1 that replay recorded shapes.

Each answers from the fixtures in ``tests/fixtures/providers/`` (``{text}``, ``{text1}`` and
``{text2}`` filled with ``<name>:<last user text>``, so tests tell answers apart), checks the
key where the real API wants it and records every request, its headers and its query. A
request with tools gets the recorded tool call. ``fault`` (with ``fault_times``): ``429``
(the provider's own error body and ``Retry-After: 1``), ``500``, ``400`` (a refusal of the
request). A key in ``rate_limited`` always gets 429.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.component.router.mock_providers import KEY, MockOpenAI, MockProvider

FIXTURES = Path(__file__).parents[2] / "fixtures" / "providers"


def fixture(name: str, **fill: str) -> str:
    text = (FIXTURES / name).read_text()
    for key, value in fill.items():
        text = text.replace("{" + key + "}", json.dumps(value)[1:-1])
    return text


class MockDialect(MockProvider):
    """Shared plumbing: the key check, faults, the recorded answers."""

    prefix = "mock"
    answer = ""
    tool_answer = ""
    stream = ""
    tool_stream = ""
    error_fixture = ""

    def __init__(self, key: str = KEY) -> None:
        super().__init__(key)
        self.queries: list[dict[str, str]] = []
        self.paths: list[str] = []

    def presented(self, request: web.Request) -> str | None:
        raise NotImplementedError

    def error(self, status: int, message: str) -> web.Response:
        raise NotImplementedError

    def user_text(self, body: dict[str, Any]) -> str:
        raise NotImplementedError

    def wants_stream(self, request: web.Request, body: dict[str, Any]) -> bool:
        return bool(body.get("stream"))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        self.queries.append(dict(request.query))
        self.paths.append(request.path)
        key = self.presented(request)
        if key not in self.keys:
            return self.error(401, "API key not valid. Please pass a valid API key.")
        fault = "429" if key in self.rate_limited else self.take_fault()
        if fault == "429":
            resp = web.Response(
                status=429, body=(FIXTURES / self.error_fixture).read_bytes(),
                content_type="application/json", headers={"Retry-After": "1"},
            )  # fmt: skip
            return resp
        if fault == "500":
            return self.error(500, "An internal error has occurred.")
        if fault == "400":
            return self.error(400, "Invalid request: the prompt is too long.")
        text = f"{self.prefix}:{self.user_text(body)}"
        tools = bool(body.get("tools"))
        if not self.wants_stream(request, body):
            name = self.tool_answer if tools else self.answer
            return web.Response(body=fixture(name, text=text), content_type="application/json")
        first, second = text.split(":", 1)
        data = fixture(self.tool_stream if tools else self.stream, text1=first, text2=":" + second)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in data.encode().split(b"\n\n"):
            if piece.strip():
                await resp.write(piece + b"\n\n")
        return resp


class MockGemini(MockDialect):
    """``generateContent`` and ``streamGenerateContent?alt=sse`` of the Gemini API (API key in
    ``x-goog-api-key``), and of Vertex AI (``vertex=True``: the project's path, a bearer token).
    """

    name = "mock-gemini"
    prefix = "gemini"
    answer, tool_answer = "gemini-generate.json", "gemini-function-call.json"
    stream, tool_stream = "gemini-stream.sse", "gemini-stream-tools.sse"
    error_fixture = "gemini-error.json"

    def __init__(self, key: str = KEY, vertex: bool = False) -> None:
        self.vertex = vertex
        super().__init__(key)

    def routes(self, app: web.Application) -> None:
        if self.vertex:
            path = "/v1/projects/{project}/locations/{location}/publishers/google/models/{call}"
        else:
            path = "/v1beta/models/{call}"
        app.router.add_post(path, self.handle)

    def presented(self, request: web.Request) -> str | None:
        if self.vertex:
            return request.headers.get("Authorization", "").removeprefix("Bearer ")
        return request.headers.get("x-goog-api-key")

    def wants_stream(self, request: web.Request, body: dict[str, Any]) -> bool:
        return request.path.endswith(":streamGenerateContent") and request.query.get("alt") == "sse"

    def error(self, status: int, message: str) -> web.Response:
        kinds = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 500: "INTERNAL"}
        doc = {"error": {"code": status, "message": message, "status": kinds.get(status)}}
        return web.json_response(doc, status=status)

    def user_text(self, body: dict[str, Any]) -> str:
        for content in reversed(body.get("contents") or []):
            texts = [p["text"] for p in content.get("parts", []) if "text" in p]
            if content.get("role") == "user" and texts:
                return " ".join(texts)
        return ""


class MockCohere(MockDialect):
    """``POST /v2/chat`` of Cohere (bearer key), streams as its SSE events."""

    name = "mock-cohere"
    prefix = "cohere"
    answer, tool_answer = "cohere-chat.json", "cohere-tool-call.json"
    stream, tool_stream = "cohere-stream.sse", "cohere-stream-tools.sse"
    error_fixture = "cohere-error.json"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/chat", self.handle)

    def presented(self, request: web.Request) -> str | None:
        return request.headers.get("Authorization", "").removeprefix("Bearer ")

    def error(self, status: int, message: str) -> web.Response:
        return web.json_response({"message": message}, status=status)

    def user_text(self, body: dict[str, Any]) -> str:
        for message in reversed(body.get("messages") or []):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    return content
                return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
        return ""


class MockAzure(MockOpenAI):
    """Azure OpenAI: ``/openai/deployments/{deployment}/...?api-version=``, ``api-key`` header
    (or ``entra=True``: a bearer token); answers as OpenAI's API does."""

    name = "mock-azure"

    def __init__(self, key: str = KEY, entra: bool = False) -> None:
        self.entra = entra
        self.queries: list[dict[str, str]] = []
        self.paths: list[str] = []
        super().__init__(key)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self.azure)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self.azure_embeddings)

    def _check(self, request: web.Request) -> web.Response | None:
        self.queries.append(dict(request.query))
        self.paths.append(request.path)
        if "api-version" not in request.query:
            return self._fail(404, "Resource not found", "invalid_request_error")
        return None

    def presented(self, request: web.Request) -> str:
        if self.entra:
            return request.headers.get("Authorization", "").removeprefix("Bearer ")
        return request.headers.get("api-key", "")

    async def azure(self, request: web.Request) -> web.StreamResponse:
        return self._check(request) or await self.chat(request)

    async def azure_embeddings(self, request: web.Request) -> web.StreamResponse:
        return self._check(request) or await self.embeddings(request)
