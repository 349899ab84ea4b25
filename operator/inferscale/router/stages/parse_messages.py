"""Parse a Messages request: Anthropic's API in, the pipeline's OpenAI form out.

The body is read as :mod:`.parse` reads an OpenAI one (413, 408, 400 for what is no JSON
object), then checked and translated (:func:`inferscale.router.messages.messages_to_chat`): a
request without ``max_tokens``, with content blocks of the wrong type or fields of the wrong
type gets 400 naming the field. The translated chat completions body is what every later stage
sees and what engines get (``ctx.body``, ``ctx.obj``, ``ctx.path``); ``ctx.dialect`` makes the
answer Anthropic's again (:mod:`inferscale.router.messages_http`).
"""

from __future__ import annotations

from aiohttp import web

from inferscale.router.access_log import AccessLog
from inferscale.router.codec import dumps
from inferscale.router.context import RequestContext
from inferscale.router.messages import CHAT_PATH, MessagesError, messages_to_chat, stop_sequences
from inferscale.router.messages_http import MessagesDialect
from inferscale.router.stages import Stage
from inferscale.router.stages.parse import read_json


class ParseMessages(Stage):
    """Read, check and translate a Messages request body."""

    __slots__ = ("body_timeout", "log")

    def __init__(self, body_timeout: float, log: AccessLog) -> None:
        """Wait at most ``body_timeout`` seconds for a body still on its way."""
        self.body_timeout = body_timeout
        self.log = log

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """400/408/413 for a request the router cannot serve; else hand on, translated."""
        obj = await read_json(ctx, self.body_timeout, self.log)
        if isinstance(obj, web.Response):
            return obj
        try:
            chat = messages_to_chat(obj)
        except MessagesError as error:
            return self.log.refuse(ctx, 400, error.message)
        ctx.body, ctx.obj, ctx.path = dumps(chat), chat, CHAT_PATH
        ctx.name, ctx.stream = chat["model"], bool(chat.get("stream"))
        ctx.dialect = MessagesDialect(ctx.name, stop_sequences(obj))
        return await self.next(ctx)
