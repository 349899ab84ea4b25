"""Parse: read the body (bounded in size and time) and check the fields the router relies on.

Bad input never reaches an engine: a body over ``max_request_bytes`` gets 413, a client slower
than ``client_body_timeout_seconds`` 408, malformed JSON, a body that is not an object, a
missing or wrong-typed ``model``/``stream``/``stream_options`` 400, each an OpenAI error object.
Unknown fields are kept: the body is forwarded byte for byte. Sets ``ctx.body``, ``ctx.obj``,
``ctx.name`` and ``ctx.stream``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from inferscale.router.access_log import AccessLog
from inferscale.router.codec import loads
from inferscale.router.context import RequestContext
from inferscale.router.stages import Stage


class Parse(Stage):
    """Read and check an OpenAI request body."""

    __slots__ = ("body_timeout", "log")

    def __init__(self, body_timeout: float, log: AccessLog) -> None:
        """Wait at most ``body_timeout`` seconds for a body still on its way."""
        self.body_timeout = body_timeout
        self.log = log

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """400/408/413 for a body the router cannot route; else hand on."""
        obj = await read_json(ctx, self.body_timeout, self.log)
        if isinstance(obj, web.Response):
            return obj
        refuse = self.log.refuse
        name = obj.get("model")
        if not isinstance(name, str) or not name:
            return refuse(ctx, 400, "model: a non-empty string is required", "model")
        stream = obj.get("stream")
        if stream is not None and not isinstance(stream, bool):
            return refuse(ctx, 400, "stream: must be a boolean", "stream")
        options = obj.get("stream_options")
        if options is not None and not isinstance(options, dict):
            return refuse(ctx, 400, "stream_options: must be an object")
        ctx.obj, ctx.name, ctx.stream = obj, name, bool(stream)
        return await self.next(ctx)


async def read_json(
    ctx: RequestContext, body_timeout: float, log: AccessLog
) -> dict[str, Any] | web.Response:
    """The request's JSON object (its bytes in ``ctx.body``), or the refusal to answer with."""
    request = ctx.request
    refuse = log.refuse
    if (request.content_length or 0) > request.client_max_size:
        # Refused before a byte of the body is read: no memory spent on a body that is too big.
        return _closing(refuse(ctx, 413, "request body too large", "request_too_large"))
    try:
        if request.content.is_eof():
            body = await request.read()  # already buffered: no timer needed
        else:
            async with asyncio.timeout(body_timeout):
                body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _closing(refuse(ctx, 413, "request body too large", "request_too_large"))
    except TimeoutError:
        return _closing(refuse(ctx, 408, "the request body was not sent in time"))
    try:
        obj = loads(body)
    except (ValueError, RecursionError):
        return refuse(ctx, 400, "the request body is not valid JSON")
    if not isinstance(obj, dict):
        return refuse(ctx, 400, "the request body must be a JSON object")
    ctx.body = body
    return obj


def _closing(response: web.Response) -> web.Response:
    """``response``, and the connection closes after it.

    The rest of an unread body is never parsed as a next request, and a slow-loris client that
    trickles its body loses its connection.
    """
    response.force_close()
    return response
