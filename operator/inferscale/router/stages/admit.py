"""Admit: a limited client's rates and budgets, charged an estimate up front (429 past one).

Only clients with limits pay for this stage; in-process limits need no coroutine per request,
a shared store (Redis) is awaited. The estimate is corrected by :mod:`.account` when the
answer is known.
"""

from __future__ import annotations

from aiohttp import web

from inferscale.router.access import Refusal, estimate_tokens
from inferscale.router.context import RequestContext
from inferscale.router.stages.authenticate import AccessStage, refuse


class Admit(AccessStage):
    """Charge a limited client's estimate; 429 with ``Retry-After`` past a limit."""

    __slots__ = ()

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """Sets ``ctx.grant`` for a limited client that is admitted; else hands on as it is."""
        policy = ctx.policy
        if policy.limited:
            estimate = estimate_tokens(len(ctx.body), ctx.obj)
            access = self.access
            admitted = (
                access.admit_in_process(policy, estimate)
                if access.shared is None
                else await access.admit(policy, estimate)
            )
            if isinstance(admitted, Refusal):
                return refuse(self.log, ctx, admitted, policy.client)
            ctx.grant = admitted
        return await self.next(ctx)
