"""Mock Gemini, Vertex AI, Cohere and Azure OpenAI APIs on 127.0.0.1 that replay recorded shapes.

Each answers from the fixtures in ``tests/fixtures/providers/`` (``{text}``, ``{text1}`` and
``{text2}`` filled with ``<name>:<last user text>``, so tests tell answers apart), checks the
key where the real API wants it and records every request, its headers and its query. A
request with tools gets the recorded tool call. ``fault`` (with ``fault_times``): ``429``
(the provider's own error body and ``Retry-After: 1``), ``500``, ``400`` (a refusal of the
request). A key in ``rate_limited`` always gets 429. Bedrock's mock checks SigV4 signatures and
answers streams in AWS's binary event stream.
"""

from __future__ import annotations

import datetime
import json
import struct
import zlib
from pathlib import Path
from typing import Any

from aiohttp import web

from inferscale.router import aws
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

    def offered_tools(self, body: dict[str, Any]) -> bool:
        return bool(body.get("tools"))

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
        tools = self.offered_tools(body)
        if not self.wants_stream(request, body):
            name = self.tool_answer if tools else self.answer
            return web.Response(body=fixture(name, text=text), content_type="application/json")
        first, second = text.split(":", 1)
        data = fixture(self.tool_stream if tools else self.stream, text1=first, text2=":" + second)
        return await self.stream_answer(request, data)

    async def stream_answer(self, request: web.Request, data: str) -> web.StreamResponse:
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


def event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One frame of AWS's binary event stream (string headers), with its two CRC32s."""
    raw = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in headers.items()
    )
    prelude = struct.pack(">II", 16 + len(raw) + len(payload), len(raw))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + raw + payload
    return message + struct.pack(">I", zlib.crc32(message))


class MockBedrock(MockDialect):
    """``/model/{id}/converse`` and ``/converse-stream`` of Bedrock's runtime: it checks the
    SigV4 signature as AWS does (signing the request it got again, at its ``X-Amz-Date``, with
    the secret of the access key id it names), and streams AWS's binary event stream."""

    name = "mock-bedrock"
    prefix = "bedrock"
    answer, tool_answer = "bedrock-converse.json", "bedrock-tool-use.json"
    stream, tool_stream = "bedrock-stream.jsonl", "bedrock-stream-tools.jsonl"
    error_fixture = "bedrock-error.json"
    region = "eu-west-1"

    def __init__(self, key: str = "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY") -> None:
        super().__init__(key)
        self.raw: list[bytes] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/model/{model}/converse", self.signed)
        app.router.add_post("/model/{model}/converse-stream", self.signed)

    async def signed(self, request: web.Request) -> web.StreamResponse:
        self._verified = await self._verify(request)
        return await self.handle(request)

    async def _verify(self, request: web.Request) -> str | None:
        body = await request.read()
        claimed = request.headers.get("Authorization", "")
        stamp = request.headers.get("X-Amz-Date", "")
        for key in self.keys:
            access_key_id = key.split(":")[0]
            if f"Credential={access_key_id}/" not in claimed:
                continue
            when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
            headers = {"Content-Type": request.headers["Content-Type"]}
            again = await aws.signed_headers(
                "POST", f"http://{request.host}{request.raw_path}", headers, body,
                aws.parse_credentials(key), self.region, now=when,
            )  # fmt: skip
            return key if again["Authorization"] == claimed else None
        return None

    def presented(self, request: web.Request) -> str | None:
        return self._verified

    def wants_stream(self, request: web.Request, body: dict[str, Any]) -> bool:
        return request.path.endswith("/converse-stream")

    def offered_tools(self, body: dict[str, Any]) -> bool:
        return bool((body.get("toolConfig") or {}).get("tools"))

    def error(self, status: int, message: str) -> web.Response:
        kinds = {
            400: "ValidationException",
            401: "UnrecognizedClientException",
            500: "InternalServerException",
        }
        return web.json_response(
            {"message": message}, status=status, headers={"x-amzn-ErrorType": kinds.get(status, "")}
        )

    def user_text(self, body: dict[str, Any]) -> str:
        for message in reversed(body.get("messages") or []):
            texts = [b["text"] for b in message.get("content", []) if "text" in b]
            if message.get("role") == "user" and texts:
                return " ".join(texts)
        return ""

    async def stream_answer(self, request: web.Request, data: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await resp.prepare(request)
        for line in data.splitlines():
            if line.strip():
                kind, payload = json.loads(line)
                headers = {
                    ":event-type": kind,
                    ":content-type": "application/json",
                    ":message-type": "event",
                }
                await resp.write(event_frame(headers, json.dumps(payload).encode()))
        return resp
