"""Authenticate: the caller's key, before anything else is read.

An unknown caller learns nothing else (not even whether its body parses): while client keys
are in use, a missing or unknown key gets 401 here. Sets ``ctx.policy`` and ``ctx.client``.
"""

from __future__ import annotations

from aiohttp import web

from inferscale.router.access import Access, Refusal
from inferscale.router.access_log import AccessLog
from inferscale.router.codec import error_response
from inferscale.router.context import RequestContext
from inferscale.router.stages import Stage


class AccessStage(Stage):
    """A stage that checks the caller against the client access (authenticate, authorize, admit)."""

    __slots__ = ("access", "log")

    def __init__(self, access: Access, log: AccessLog) -> None:
        """Check against ``access``; refusals go to ``log``."""
        self.access = access
        self.log = log


class Authenticate(AccessStage):
    """Identify the caller by its bearer key (a no-op while no client keys are held)."""

    __slots__ = ()

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """401 for a missing or unknown key while keys are required; else hand on."""
        access = self.access
        if access.active:
            identified = access.identify(client_key(ctx.request))
            if isinstance(identified, Refusal):
                return refuse(self.log, ctx, identified)
            ctx.policy = identified
            ctx.client = identified.client
        return await self.next(ctx)


def client_key(request: web.Request) -> str | None:
    """The caller's ``Authorization`` header; Anthropic's ``x-api-key`` stands for it when absent.

    Anthropic's SDKs send their key as ``x-api-key``; accepting it on every path lets one key
    serve both APIs (and ``GET /v1/models`` from either SDK).
    """
    headers = request.headers
    authorization = headers.get("Authorization")
    if authorization is None:
        key = headers.get("X-Api-Key")
        if key:
            return f"Bearer {key}"
    return authorization


def refuse(log: AccessLog, ctx: RequestContext, refusal: Refusal, client: str = "") -> web.Response:
    """Log an access refusal (no model) and answer it."""
    log.refused(ctx, refusal.status, client)
    return refusal_response(refusal)


def refusal_response(refusal: Refusal) -> web.Response:
    """The OpenAI error answer of an access refusal (401, 403 or 429)."""
    return error_response(
        refusal.status,
        refusal.message,
        code=refusal.code,
        headers=refusal.headers,
        kind=refusal.kind,
    )
