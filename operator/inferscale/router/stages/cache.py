"""Cache lookup: the place of a response cache (a semantic cache) in the request path.

Empty for now: every request is a miss and goes on to its route. A cache answers here, before
the request is held or forwarded (after admission, so a cached answer still counts against the
caller's rate limits); its route setting belongs in
:class:`inferscale.protocol.table.RouteSettings`.
"""

from __future__ import annotations

from aiohttp import web

from inferscale.router.context import RequestContext
from inferscale.router.stages import Stage


class CacheLookup(Stage):
    """Answer from a cache, or hand on (always, for now)."""

    __slots__ = ()

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """A miss: hand on."""
        return await self.next(ctx)
