"""Account: settle an admitted client's charge with what the answer really used.

Wraps the rest of the path. Also when the client went away (handler cancelled): the engine's
tokens up to then are unknown, so the estimate stays charged (status 200 until answered). A
failed answer is refunded; see :meth:`inferscale.router.access.Access.settle`. Token counters
and the access line are written where the answer is read (forward, dispatch).
"""

from __future__ import annotations

from aiohttp import web

from inferscale.router.access import Access
from inferscale.router.context import RequestContext
from inferscale.router.stages import Stage


class Account(Stage):
    """Settle ``ctx.grant`` once the answer is done."""

    __slots__ = ("access",)

    def __init__(self, access: Access) -> None:
        """Settle with ``access``."""
        self.access = access

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """Hand on; settle the grant afterwards, whatever happened."""
        if ctx.grant is None:
            return await self.next(ctx)
        try:
            return await self.next(ctx)
        finally:
            self.access.settle(ctx.grant, ctx.usage, ctx.status, ctx.cost)
