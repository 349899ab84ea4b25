"""Authorize: whether the caller's key may use the model it asked for (403 if not).

It comes before the model is looked up, so a key learns nothing about models it may not use
(an unknown model and a forbidden one both get 403).
"""

from __future__ import annotations

from aiohttp import web

from inferscale.router.access import ANONYMOUS
from inferscale.router.context import RequestContext
from inferscale.router.stages.authenticate import AccessStage, refuse


class Authorize(AccessStage):
    """Check the key's allowed models (free for an anonymous caller)."""

    __slots__ = ()

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """403 for a model the key may not use; else hand on."""
        policy = ctx.policy
        if policy is not ANONYMOUS:
            refusal = self.access.authorize(policy, ctx.name)
            if refusal is not None:
                return refuse(self.log, ctx, refusal, policy.client)
        return await self.next(ctx)
