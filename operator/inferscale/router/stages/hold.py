"""Hold while cold: a model with no ready replica holds its requests until the table gives it one.

The queue is bounded per model (``holdQueue.maxRequests``) and in time (``maxWaitSeconds``);
past either the answer is 503 with ``Retry-After`` (an SSE error event if a held stream's
headers already went out with a keep-alive), never 404. Held streams get SSE comment
keep-alives. A table push wakes the held requests of every model that can now serve; so does
shutdown, and they answer at once. A model removed while requests wait answers them 503
``model_removed`` (not 404: the model existed when they came, and a client that retries may
find it again, as during an InferenceModel's delete and re-create); a request that arrives
after the removal gets select model's 404.

When other backends follow (``ctx.fallible``, spillover and fallback), a hold that fails
raises :class:`~inferscale.router.codec.AttemptFinal` instead of answering.
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

from aiohttp import web

from inferscale.router.codec import AttemptFinal, sse_error
from inferscale.router.context import RequestContext
from inferscale.router.stages import Stage
from inferscale.router.state import RouterState
from inferscale.router.table import EndpointTable, ModelState

SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
KEEPALIVE: Final = b": waiting for a replica\n\n"


class Hold(Stage):
    """Hand a request on once its model has a ready endpoint; hold it until then."""

    __slots__ = ("ready_events", "state")

    def __init__(self, state: RouterState) -> None:
        """Hold against ``state``'s table and counters; wake on each table swap."""
        self.state = state
        self.ready_events: dict[str, asyncio.Event] = {}
        state.table.subscribe(self.on_table)

    def on_table(self, table: EndpointTable) -> None:
        """Wake held requests whose model can serve now (or was removed)."""
        for name in list(self.ready_events):
            model = table.models.get(name)
            if model is None or model.ready:
                self.ready_events.pop(name).set()

    def wake_all(self) -> None:
        """Wake every held request (shutdown: they answer now)."""
        for event in self.ready_events.values():
            event.set()

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """Hand on at once when the model has a ready endpoint; else hold."""
        model = ctx.model
        assert model is not None
        if not model.ready:
            refused = await self.hold(ctx, model)
            if refused is not None:
                return refused
        return await self.next(ctx)

    async def hold(self, ctx: RequestContext, model: ModelState) -> web.StreamResponse | None:
        """Wait for a ready endpoint; sets ``ctx.model`` (and ``ctx.committed``) when one comes."""
        state, name = self.state, ctx.name
        # An adapter's requests wait for its base model's replicas: counted there, they are
        # the held load that wakes a model at zero (the autoscaler reads the base's count).
        held = model.base or name
        bounds = model.route.hold_queue
        retry_after = str(max(1, math.ceil(min(bounds.max_wait_seconds, 60))))
        if state.held.get(held, 0) >= bounds.max_requests:
            self._count(name, "full")
            message = f"the model `{name}` is starting and its hold queue is full"
            if ctx.fallible:
                raise AttemptFinal(message, 503, headers={"Retry-After": retry_after})
            return state.log.refuse(
                ctx,
                503,
                f"The model `{name}` is starting and its hold queue is full; retry later.",
                code="model_unavailable",
                headers={"Retry-After": retry_after},
            )
        state.held[held] = state.held.get(held, 0) + 1
        outcome = "timeout"
        try:
            outcome = await self._wait(ctx, ctx.start + bounds.max_wait_seconds)
        finally:
            state.held[held] -= 1
            self._count(name, outcome)
        if outcome == "served":
            return None
        return await self._give_up(ctx, outcome, retry_after)

    async def _wait(self, ctx: RequestContext, deadline: float) -> str:
        """Until the model is ready, removed or out of time; keep-alives for a stream."""
        state, name = self.state, ctx.name
        # Bounded: each pass either waits until the deadline or a keep-alive, or returns.
        while not state.stop.is_set():
            current = state.table.models.get(name)
            if current is None:
                return "removed"
            if current.ready:
                ctx.model = current
                return "served"
            left = deadline - state.clock()
            if left <= 0:
                break
            event = self.ready_events.get(name)
            if event is None:
                event = self.ready_events[name] = asyncio.Event()
            wait = min(left, state.settings.keepalive_seconds) if ctx.stream else left
            try:
                async with asyncio.timeout(wait):
                    await event.wait()
            except TimeoutError:
                if ctx.stream and state.clock() < deadline:
                    if ctx.committed is None:
                        ctx.committed = await ctx.open_stream(200, SSE_HEADERS)
                    await ctx.committed.write(KEEPALIVE)
        return "timeout"

    async def _give_up(
        self, ctx: RequestContext, outcome: str, retry_after: str
    ) -> web.StreamResponse:
        name, log, resp = ctx.name, self.state.log, ctx.committed
        if ctx.fallible:
            reason = "was removed" if outcome == "removed" else "has no ready replica yet"
            raise AttemptFinal(
                f"the model `{name}` {reason}", 503, headers={"Retry-After": retry_after}
            )
        if outcome == "removed":
            message = f"The model `{name}` was removed while this request waited for a replica."
            if resp is not None:
                await resp.write(sse_error(503, message, "model_removed"))
                log.write(ctx, 503, "")
                return resp
            return log.refuse(ctx, 503, message, code="model_removed")
        message = f"The model `{name}` has no ready replica yet; retry after {retry_after} s."
        if resp is not None:
            await resp.write(sse_error(503, message, "model_unavailable"))
            log.write(ctx, 503, "")
            return resp
        return log.refuse(
            ctx, 503, message, code="model_unavailable", headers={"Retry-After": retry_after}
        )

    def _count(self, name: str, outcome: str) -> None:
        held_total = self.state.metrics.held_total
        held_total[(name, outcome)] = held_total.get((name, outcome), 0) + 1
