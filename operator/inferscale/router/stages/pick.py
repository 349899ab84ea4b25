"""Pick endpoint: choose a ready endpoint by the route's strategy, and retry another on failure.

Wraps the forward stage: each attempt picks among the model's ready endpoints whose circuit
breaker lets a request through, leaving out those already tried; an attempt that fails before
anything reached the client (:class:`~inferscale.router.codec.AttemptFailed`: connect errors,
a connection dropped before the answer, the route's ``retries.onStatus``) counts towards the
endpoint's breaker and the next attempt goes elsewhere, up to ``retries.maxAttempts`` in all.
When none is left the client gets the engine's own last answer, or an OpenAI error naming the
failure (as an SSE event on a held stream whose headers went out).

The pickers themselves are pure (:mod:`inferscale.router.picking`); this stage keeps the
in-flight and pending-prefill counts they balance on.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from inferscale.router import picking
from inferscale.router.codec import JSON, AttemptFailed, AttemptFinal, error_response, sse_error
from inferscale.router.context import RequestContext
from inferscale.router.stages import Stage
from inferscale.router.state import RouterState
from inferscale.router.table import EndpointState, ModelState
from inferscale.router.ttft import Estimate


class PickEndpoint(Stage):
    """Pick an endpoint per attempt; hand each attempt on to the forward stage."""

    __slots__ = ("adapter_shares", "state")

    def __init__(self, state: RouterState) -> None:
        """Pick from ``state``'s table (as it is at each attempt)."""
        self.state = state
        self.adapter_shares: dict[str, picking.AdapterShares] = {}
        """Per base model, its adapter requests sent to each endpoint (adapter routing); one
        small entry per base model with adapters, kept across tables so shares carry over."""

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """Attempts until one answers or none is left; then the most telling error."""
        state = self.state
        model = ctx.model
        assert model is not None
        tried: list[EndpointState] = []
        prompt_tokens = picking.estimate_prompt_tokens(len(ctx.body))
        last = AttemptFailed("no endpoint could take the request", 503)
        for attempt in range(model.route.retries.max_attempts):
            if attempt:
                # Retry from the table as it is now: a push during the failed attempt may have
                # removed that pod (a scale-down) or added the one that can take the request.
                model = ctx.model = state.table.models.get(model.name, model)
            candidates = model.candidates(state.clock())
            if tried:
                failed = {e.address for e in tried}
                candidates = [e for e in candidates if e.address not in failed]
            if model.base is not None:  # a LoRA adapter's name
                candidates = list(picking.holding_adapter(candidates, model.name))
            if not candidates:
                break
            predicted = None
            if model.route.strategy == "predictedTTFT" and model.base is None:
                predicted = pick_predicted(model, candidates, ctx.obj, state)
            blocks: tuple[int, ...] = ()
            if predicted is not None:
                endpoint, estimate, blocks = predicted
                state.kv.sent(endpoint.key, blocks)
                ctx.prefill_tokens = estimate.own_tokens
                ctx.ttft_work = estimate.work_tokens
                ctx.ttft_host = estimate.host_tokens
                ctx.attempt_start = state.clock()
            else:
                endpoint = pick(model, candidates, ctx.obj, state, self.adapter_shares)
                ctx.prefill_tokens = prompt_tokens
                ctx.ttft_work = 0
            if attempt:
                state.metrics.bump(state.metrics.retries, ctx.name)
            tried.append(endpoint)
            endpoint.in_flight += 1
            endpoint.pending_prompt_tokens += ctx.prefill_tokens
            ctx.endpoint = endpoint
            try:
                return await self.next(ctx)
            except AttemptFinal:
                raise
            except AttemptFailed as retry:
                last = retry
                state.endpoint_failed(endpoint)
            finally:
                endpoint.in_flight -= 1
                ctx.prefilled(endpoint)
                state.kv.finished(endpoint.key, blocks)
        return await self._exhausted(ctx, model, tried, last)

    async def _exhausted(
        self,
        ctx: RequestContext,
        model: ModelState,
        tried: list[EndpointState],
        last: AttemptFailed,
    ) -> web.StreamResponse:
        """No attempt answered: raise for a fallible caller, else answer the last failure."""
        if ctx.fallible:
            if not tried:
                last = AttemptFailed(f"no replica of `{model.name}` can take the request", 503)
            raise last
        log, committed = self.state.log, ctx.committed
        pod = tried[-1].pod if tried else ""
        log.write(ctx, last.status, pod, attempts=len(tried))
        if committed is not None:
            await committed.write(sse_error(last.status, f"upstream failed: {last.reason}"))
            return committed
        if last.body is not None:  # the engine's own answer to the last attempt, as it was
            return web.Response(status=last.status, body=last.body, headers={"Content-Type": JSON})
        headers_out = {"Retry-After": "1"} if last.status == 503 else None
        message = (
            f"all endpoints of `{ctx.name}` are failing; retry later"
            if not tried
            else f"upstream failed after {len(tried)} attempt(s): {last.reason}"
        )
        return error_response(last.status, message, headers=headers_out)


def pick_predicted(
    model: ModelState, candidates: list[EndpointState], obj: dict[str, Any], state: RouterState
) -> tuple[EndpointState, Estimate, tuple[int, ...]] | None:
    """``predictedTTFT``'s pick, estimate and the prompt's blocks; ``None``: can't hash exactly.

    The candidates' engine must be one whose block hashes the router computes (the sim's, in
    ``protocol.simtokens``) and publish KV events; otherwise the caller picks by
    ``leastPrefill`` rather than score caches it cannot see (docs/router.md).
    """
    prompt = state.kv.prompt(candidates, obj)
    if prompt is None:
        return None
    model.counter += 1
    hashes, tokens = prompt
    endpoint, estimate = state.kv.pick(
        candidates, hashes, tokens, model.counter, model.name, state.clock()
    )
    return endpoint, estimate, hashes


def pick(
    model: ModelState,
    candidates: list[EndpointState],
    obj: dict[str, Any],
    state: RouterState,
    adapter_shares: dict[str, picking.AdapterShares],
) -> EndpointState:
    """The endpoint ``model``'s strategy picks among ``candidates`` for a request ``obj``.

    ``adapter_shares`` holds each base model's :class:`~inferscale.router.picking.AdapterShares`
    (created on its adapters' first request).
    """
    route = model.route
    model.counter += 1
    strategy = route.strategy
    if model.base is not None and strategy in picking.ADAPTER_AFFINE:  # a LoRA adapter's name
        if model.ring is None:  # built on the adapter's first request, kept for the table
            model.ring = picking.HashRing(
                [e.key for e in model.ready], route.prefix_hash.replicas_per_endpoint
            )
        shares = adapter_shares.get(model.base)
        if shares is None:
            shares = adapter_shares[model.base] = picking.AdapterShares()
        endpoint = picking.adapter_affinity(
            candidates, model.ring, model.name, shares, route.prefix_hash.load_bound, model.counter
        )
        shares.note(endpoint.key)
        picking.remember_adapter(endpoint.recent_adapters, model.name, model.adapter_slots)
        return endpoint
    if strategy == "leastInFlight":
        return picking.least_in_flight(candidates, model.counter)
    if strategy == "prefixHash":
        text = picking.prefix_text(obj, route.prefix_hash.prefix_characters)
        ring = model.ring
        if ring is None:
            ring = model.ring = picking.HashRing(
                [e.key for e in model.ready], route.prefix_hash.replicas_per_endpoint
            )
        return picking.prefix_hash(
            candidates, ring, picking.hash64(text), route.prefix_hash.load_bound
        )
    return picking.pick(strategy, candidates, counter=model.counter, r=state.random.random())
