"""JSON and OpenAI error objects, shared by the router's server side and its provider clients.

orjson when it is installed (3-5x faster on the hot path), else the standard library. The error
helpers build the OpenAI error object every refusal and failure answers with, as a body or as an
SSE event (what the ``openai`` SDK raises from mid-stream).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from aiohttp import web

JSON: Final = "application/json"


def _dumps_stdlib(doc: object) -> bytes:
    return json.dumps(doc).encode()


try:  # orjson parses and writes JSON 3-5x faster; the stdlib is the fallback.
    _orjson: Any = importlib.import_module("orjson")
    loads: Callable[[bytes | str], Any] = _orjson.loads
    dumps: Callable[[object], bytes] = _orjson.dumps
except ImportError:
    loads = json.loads
    dumps = _dumps_stdlib

ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    408: "timeout",
    409: "conflict",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout",
}


def error_body(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    kind: str | None = None,
) -> bytes:
    """An OpenAI error object (``kind``: its ``type``, else the usual one for ``status``)."""
    kind = kind or ERROR_TYPES.get(status, "server_error")
    doc = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return json.dumps(doc).encode()


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    kind: str | None = None,
) -> web.Response:
    """An OpenAI error as a response."""
    out = {"Content-Type": JSON}
    if headers:
        out.update(headers)
    body = error_body(status, message, param=param, code=code, kind=kind)
    return web.Response(status=status, body=body, headers=out)


def sse_error(status: int, message: str, code: str | None = None) -> bytes:
    """An OpenAI error as an SSE event (what the ``openai`` SDK raises from mid-stream)."""
    return b"data: " + error_body(status, message, code=code) + b"\n\n"


class AttemptFailed(Exception):
    """An attempt failed before anything reached the client: try the next endpoint or backend.

    ``body`` is the upstream's own answer (passed on when nothing else can answer); ``headers``
    go with the error the client gets in that case (``Retry-After``).
    """

    def __init__(
        self,
        reason: str,
        status: int = 502,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """``reason`` is said in the final error; ``status`` is that error's status."""
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body
        self.headers = headers


class AttemptFinal(AttemptFailed):
    """An attempt failed in a way not retried on another endpoint (a timeout, a broken answer).

    Raised only for a caller that has other backends to fail over to (``ctx.fallible``).
    """


USAGE_TAIL_BYTES: Final = 4096
"""Bytes at the end of a stream that are searched for its usage event (an event is far
smaller; only ``[DONE]`` follows it)."""


def stream_usage(tail: bytes) -> dict[str, Any] | None:
    """The ``usage`` of the last SSE event that carries one, from the stream's tail bytes."""
    at = tail.rfind(b'"usage":{')
    if at < 0:
        at = tail.rfind(b'"usage": {')
    if at < 0:
        return None
    start = tail.rfind(b"data:", 0, at)
    end = tail.find(b"\n", at)
    if start < 0:
        return None
    try:
        doc = loads(tail[start + 5 : end if end >= 0 else len(tail)])
    except (ValueError, RecursionError):
        return None
    usage = doc.get("usage") if isinstance(doc, dict) else None
    return usage if isinstance(usage, dict) else None
