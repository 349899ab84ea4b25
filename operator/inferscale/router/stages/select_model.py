"""Select model: the route's table entry for the model the client asked for (404 if none).

Today the entry is the one named by the request's ``model``; a model selector (choosing among
models by the request) would set ``ctx.model`` here instead. A model at zero replicas is still
selected: its requests are held, never answered 404.
"""

from __future__ import annotations

from aiohttp import web

from inferscale.router.access_log import AccessLog
from inferscale.router.context import RequestContext
from inferscale.router.stages import Stage
from inferscale.router.table import EndpointTable


class SelectModel(Stage):
    """Look the requested model up in the live table."""

    __slots__ = ("log", "table")

    def __init__(self, table: EndpointTable, log: AccessLog) -> None:
        """Select from ``table`` (as it is when each request arrives)."""
        self.table = table
        self.log = log

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """404 ``model_not_found`` for a model the table does not hold; else hand on."""
        model = self.table.models.get(ctx.name)
        if model is None:
            return self.log.refuse(
                ctx, 404, f"The model `{ctx.name}` does not exist.", "model", "model_not_found"
            )
        ctx.model = model
        return await self.next(ctx)
