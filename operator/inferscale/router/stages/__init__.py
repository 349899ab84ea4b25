"""The router's request path as a chain of stages, one module each.

A stage has one entry point: ``await stage(ctx)`` with the request's
:class:`~inferscale.router.context.RequestContext`. It answers (returns a response) or hands
the request on (``return await self.next(ctx)``); a stage that must act after the answer
(settle a charge, retry another endpoint) wraps that call. The chain is linked once, when the
app is built, so a request pays one call per stage and nothing for stages that are not there:

    authenticate -> parse -> authorize -> select model -> admit -> account -> cache lookup
      -> plain route:  hold -> pick endpoint -> forward and relay
      -> with backends (spillover, fallback, mirror, providers): router.dispatch

The access log is written where the answer is known (:mod:`inferscale.router.access_log`).
A new stage is one module here with a :class:`Stage` subclass, linked in
:class:`inferscale.router.app.Pipeline`, and its setting in the protocol
(:mod:`inferscale.protocol.table`) when routes configure it.
"""

from __future__ import annotations

from aiohttp import web

from inferscale.router.context import RequestContext


class Stage:
    """One step of the request path: answer, or hand on to :attr:`next`."""

    __slots__ = ("next",)

    next: Stage
    """The stage that follows (set by :func:`link`; the last stage has none)."""

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """Answer ``ctx``'s request, or hand it on."""
        raise NotImplementedError


def link(*stages: Stage) -> Stage:
    """Chain ``stages`` in order (each hands on to the one after it); returns the first."""
    for before, after in zip(stages, stages[1:], strict=False):
        before.next = after
    return stages[0]


class ByRoute(Stage):
    """Where the shared stages end: a plain route's chain, or the one of a route with backends.

    A plain model (its own replicas only) pays this one attribute check for the features of
    routes with spillover, fallback, mirrors or hosted providers.
    """

    __slots__ = ("backends", "plain")

    def __init__(self, plain: Stage, backends: Stage) -> None:
        """``plain`` serves models without backends; ``backends`` the others."""
        self.plain = plain
        self.backends = backends

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """Hand on to the chain of ``ctx.model``'s kind of route."""
        model = ctx.model
        assert model is not None
        if model.roles is not None:
            return await self.backends(ctx)
        return await self.plain(ctx)
