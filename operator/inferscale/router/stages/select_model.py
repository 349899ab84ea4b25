"""Select model: the route's table entry for the model the client asked for (404 if none).

The entry is the one named by the request's ``model``. A selecting route (its settings carry
``selection``: candidates with prices and tiers, and a policy) picks one of its candidates per
request instead (``router/selection.py``, scored by ``router/difficulty.py``): the request then
goes on as a request for the chosen model (its name in the body sent upstream, so the answer's
``model`` names it too) and the response says which model served in ``x-inferscale-model``. A
difficulty model that failed to load makes a cost route serve from its first candidate, never
an error. A model at zero replicas is still selected: its requests are held, never answered 404.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from aiohttp import web

from inferscale.api.v1alpha1.inference_route import RouteSelection
from inferscale.router.access_log import AccessLog
from inferscale.router.codec import dumps
from inferscale.router.context import RequestContext
from inferscale.router.difficulty import DifficultyModel
from inferscale.router.selection import (
    Candidate,
    CandidateState,
    Policy,
    Selection,
    cost_saved,
    select,
)
from inferscale.router.spend import SpendLedger
from inferscale.router.stages import Stage
from inferscale.router.table import EndpointTable, ModelState


def selection_of(settings: RouteSelection) -> Selection:
    """The policy's view of a route's selection settings."""
    return Selection(
        candidates=tuple(
            Candidate(
                name=c.model,
                input_price=c.input_price_per_million_tokens,
                output_price=c.output_price_per_million_tokens,
                tier=c.tier,
                weight=c.weight,
            )
            for c in settings.candidates
        ),
        policy=Policy(settings.policy),
        strong_share=settings.strong_share,
    )


def candidate_state(model: ModelState | None, now: float, capped: bool = False) -> CandidateState:
    """What the table says of a candidate: missing, capped or every ready replica ejected is out.

    A candidate with no ready replica is cold unless it has other backends (a provider) to
    serve it; the latency estimate is the least in-flight count among its usable replicas.
    """
    if model is None or capped:
        return CandidateState(available=False)
    usable = model.candidates(now)
    if model.ready and not usable:
        return CandidateState(available=False)
    warm = bool(model.ready) or model.roles is not None
    in_flight = min((e.in_flight for e in usable), default=0)
    return CandidateState(available=True, warm=warm, expected_wait=float(in_flight))


class SelectModel(Stage):
    """Look the requested model up in the live table; a selecting route picks a candidate."""

    __slots__ = ("clock", "difficulty", "log", "random", "spend", "table", "wall")

    def __init__(
        self,
        table: EndpointTable,
        log: AccessLog,
        difficulty: DifficultyModel | None = None,
        clock: Callable[[], float] = time.monotonic,
        spend: SpendLedger | None = None,
        wall: Callable[[], float] = time.time,
        draws: random.Random | None = None,
    ) -> None:
        """Select from ``table`` (as it is when each request arrives).

        ``difficulty`` is None when its artefact failed to load (cost routes then serve from
        their first candidate); ``clock`` is the breakers' clock (monotonic seconds);
        ``spend`` and ``wall`` (epoch seconds) tell a provider candidate over its cap;
        ``draws`` splits the weighted policy's traffic.
        """
        self.table = table
        self.log = log
        self.difficulty = difficulty
        self.clock = clock
        self.spend = spend
        self.wall = wall
        self.random = draws or random.Random()

    def capped(self, model: ModelState | None) -> bool:
        """A candidate served by providers alone whose route reached a spend cap."""
        if model is None or model.roles is None or model.endpoints or self.spend is None:
            return False
        return self.spend.capped(model.roles.route_id, model.route.spend, self.wall())

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """404 ``model_not_found`` for a model the table does not hold; else hand on."""
        model = self.table.models.get(ctx.name)
        if model is None:
            return self.log.refuse(
                ctx, 404, f"The model `{ctx.name}` does not exist.", "model", "model_not_found"
            )
        if model.route.selection is not None:
            return await self.selected(ctx, model.route.selection)
        ctx.model = model
        return await self.next(ctx)

    async def selected(self, ctx: RequestContext, settings: RouteSelection) -> web.StreamResponse:
        """Serve a selecting route's request from its chosen candidate; count what it saved."""
        route, selection = ctx.name, selection_of(settings)
        models, now = self.table.models, self.clock()
        states = {
            c.name: candidate_state(models.get(c.name), now, self.capped(models.get(c.name)))
            for c in selection.candidates
        }
        choice = select(selection, ctx.obj, states, self.difficulty, self.random.random())
        chosen = models.get(choice.candidate.name) if choice else None
        if choice is None or chosen is None:
            return self.log.refuse(ctx, 503, f"No candidate of `{route}` can take requests now.")
        name = choice.candidate.name
        self.log.metrics.count_selection(route, name)
        ctx.obj = {**ctx.obj, "model": name}
        ctx.body = dumps(ctx.obj)
        ctx.name = name
        ctx.selected = name
        ctx.model = chosen
        response = await self.next(ctx)
        if ctx.usage is not None:
            saved = cost_saved(ctx.usage, choice.candidate, selection.candidates)
            self.log.metrics.add_cost_saved(route, saved)
        return response
