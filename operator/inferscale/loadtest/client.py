"""One request to an OpenAI-compatible endpoint over aiohttp, measured; and the preflight check.

aiohttp rather than the ``openai`` SDK: at hundreds of requests per second the SDK's own
per-request cost (httpx, pydantic parsing of every chunk) shows up in the latencies it measures.
Time to first token is the first SSE event that carries generated text (``delta.content``, a
reasoning delta, or a completion's ``text``): not the response headers, which a router holding a
request for a cold model sends at once, and not the SSE comments it sends as keep-alives.

Failure behaviour: :func:`send` never raises for anything the endpoint does; every failure is an
:class:`~.stats.Outcome` with ``error`` set to a short kind (``http 503``, ``timeout``,
``connect``, ``disconnected``, ``stream error: model_unavailable``, ``incomplete stream``,
``bad response``), the figures the summary counts by. :func:`preflight` raises
:class:`Unreachable` with a message for a person. The API key travels only in the
``Authorization`` header and is never part of a message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import orjson

from inferscale.loadtest.stats import Outcome

Api = Literal["chat", "completions"]
PATHS: dict[str, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
ERROR_BODY_BYTES = 64 * 1024
"""Most of an error response that is read (then dropped): enough to free the connection."""


class Unreachable(Exception):
    """The endpoint cannot be used at all (no connection, refused key, server error)."""


@dataclass(frozen=True)
class Target:
    """Where requests go and how they look."""

    base_url: str
    """Scheme, host, port and any path prefix, without ``/v1``."""
    model: str
    api: Api = "chat"
    stream: bool = True
    timeout: float = 60.0
    headers: Mapping[str, str] | None = None
    """Sent with every request (``Authorization`` with the key, when there is one)."""
    ignore_eos: bool = False
    """Ask vLLM/SGLang-style engines to generate exactly ``max_tokens`` (OpenAI refuses it)."""


def normalise_url(url: str) -> str:
    """``http://host:8080/v1/`` → ``http://host:8080``; ValueError for what is not http(s)."""
    text = url.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a base URL has no query or fragment")
    return text.removesuffix("/v1")


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The request headers for ``api_key`` (none without one)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def preflight(
    session: aiohttp.ClientSession, target_url: str, headers: Mapping[str, str], timeout: float
) -> list[str] | None:
    """``GET /v1/models`` once: the model ids, or None when the endpoint has no such list.

    Raises :class:`Unreachable` when no connection is made or no answer comes within ``timeout``
    seconds, when the key is refused (401, 403), and on a server error (5xx).
    """
    url = target_url + "/v1/models"
    try:
        async with session.get(
            url, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            body = await response.content.read(ERROR_BODY_BYTES * 16)
            status = response.status
    except TimeoutError:
        raise Unreachable(f"{url}: no answer within {timeout:g} s") from None
    except aiohttp.ClientConnectorError as error:
        raise Unreachable(f"{url}: cannot connect: {error.os_error or error}") from None
    except aiohttp.ClientError as error:
        raise Unreachable(f"{url}: {type(error).__name__}: {error}") from None
    if status in (401, 403):
        raise Unreachable(f"{url}: the endpoint refused the API key (HTTP {status})")
    if status >= 500:
        raise Unreachable(f"{url}: the endpoint answered HTTP {status}")
    if status != 200:
        return None
    try:
        doc = orjson.loads(body)
        return [str(m["id"]) for m in doc["data"] if isinstance(m, dict) and "id" in m]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def request_body(target: Target, prompt: str, max_tokens: int) -> dict[str, Any]:
    """The JSON body of one request."""
    body: dict[str, Any] = {"model": target.model, "max_tokens": max_tokens}
    if target.api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if target.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if target.ignore_eos:
        body["ignore_eos"] = True
    return body


def _generated(event: dict[str, Any]) -> bool:
    """Whether an SSE event carries generated text."""
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    choice = choices[0]
    if choice.get("text"):
        return True
    delta = choice.get("delta")
    return isinstance(delta, dict) and bool(
        delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
    )


def _error_kind(event: dict[str, Any]) -> str:
    error = event.get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        if code:
            return f"stream error: {code}"
    return "stream error"


def _may_carry_error_or_usage(data: bytes) -> bool:
    return b'"error"' in data or b'"usage":{' in data or b'"usage": {' in data


def _usage_tokens(doc: Any) -> tuple[int | None, int | None]:
    usage = doc.get("usage") if isinstance(doc, dict) else None
    if not isinstance(usage, dict):
        return None, None
    prompt, output = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else None,
        output if isinstance(output, int) else None,
    )


async def send(
    session: aiohttp.ClientSession,
    target: Target,
    prompt: str,
    max_tokens: int,
    prompt_tokens_estimate: int,
    clock: Callable[[], float],
) -> Outcome:
    """Send one request and measure it; see the module docstring for the error kinds."""
    start = clock()
    body = orjson.dumps(request_body(target, prompt, max_tokens))
    headers = {"Content-Type": "application/json", **(target.headers or {})}
    try:
        async with session.post(
            target.base_url + PATHS[target.api],
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=target.timeout),
        ) as response:
            if response.status != 200:
                await response.content.read(ERROR_BODY_BYTES)
                return Outcome(False, clock() - start, error=f"http {response.status}")
            if target.stream:
                return await _read_stream(response, start, prompt_tokens_estimate, clock)
            raw = await response.read()
    except TimeoutError:
        return Outcome(False, clock() - start, error="timeout")
    except aiohttp.ClientConnectorError:
        return Outcome(False, clock() - start, error="connect")
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionError):
        return Outcome(False, clock() - start, error="disconnected")
    except aiohttp.ClientError as error:
        return Outcome(False, clock() - start, error=type(error).__name__)
    latency = clock() - start
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Outcome(False, latency, error="bad response")
    if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list):
        return Outcome(False, latency, error="bad response")
    prompt_used, output = _usage_tokens(doc)
    return Outcome(
        True,
        latency,
        prompt_tokens=prompt_used if prompt_used is not None else prompt_tokens_estimate,
        output_tokens=output or 0,
    )


async def _read_stream(
    response: aiohttp.ClientResponse,
    start: float,
    prompt_tokens_estimate: int,
    clock: Callable[[], float],
) -> Outcome:
    ttft: float | None = None
    chunks = 0
    prompt_used: int | None = None
    output: int | None = None
    try:
        async for raw_line in response.content:
            line = raw_line.strip()
            if not line.startswith(b"data:"):
                continue  # blank separators, ``: keep-alive`` comments, ``event:`` lines
            data = line[5:].strip()
            if data == b"[DONE]":
                return Outcome(
                    True,
                    clock() - start,
                    ttft=ttft,
                    prompt_tokens=prompt_tokens_estimate if prompt_used is None else prompt_used,
                    output_tokens=chunks if output is None else output,
                )
            # Parse only what matters: every event until the first token, then only events
            # that may carry an error or the usage (the rest are counted, not decoded).
            if ttft is not None and not _may_carry_error_or_usage(data):
                chunks += 1
                continue
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                return Outcome(False, clock() - start, ttft=ttft, error="bad response")
            if not isinstance(event, dict):
                return Outcome(False, clock() - start, ttft=ttft, error="bad response")
            if "error" in event and event["error"]:
                return Outcome(False, clock() - start, ttft=ttft, error=_error_kind(event))
            if _generated(event):
                chunks += 1
                if ttft is None:
                    ttft = clock() - start
            used, out = _usage_tokens(event)
            prompt_used = used if used is not None else prompt_used
            output = out if out is not None else output
    except ValueError:
        # aiohttp's line reader refuses a line longer than its buffer: not an SSE stream.
        return Outcome(False, clock() - start, ttft=ttft, error="bad response")
    return Outcome(False, clock() - start, ttft=ttft, error="incomplete stream")
