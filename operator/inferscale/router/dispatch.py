"""Requests of models with more than their own replicas: spillover, fallback, mirror, providers.

A model whose table entry has backends (hosted provider models, other served models) or whose
primaries are all hosted is served by this stage instead of the plain route (hold, pick,
forward; :mod:`inferscale.router.stages`), which therefore pays one attribute check for this
feature. :class:`Dispatcher` asks the pure
:func:`inferscale.router.roles.plan` for the steps (the replicas, backends), tries them in order
while nothing has reached the client, copies a share of requests to mirror backends in the
background, and prices every provider answer into the route's spend.

Failure behaviour:

- A step that fails before the first byte (replicas: connect errors, retryable statuses, a
  timeout, a broken answer, a hold that ran out; providers: see
  :mod:`inferscale.router.providers`) fails over to the next step. When none is left, the
  client gets the last step's own error (a provider's 429 stays a 429) or a clear OpenAI error
  naming what failed; a held stream whose headers already went out gets it as an SSE event.
- A provider without an API key, one whose every key is refused or rate-limited, one that does
  not serve the path, or a model without a ready replica is skipped (and a provider without a
  key counted as ``no_key``); a route with no usable backend at all answers 503 with
  ``Retry-After``.
- A provider's keys (:mod:`inferscale.router.provider_keys`) are taken in turn, each within its
  own rates. A key the provider refuses (401/403) or rate-limits (429) is taken out alone and
  the request is tried again at once with the provider's next key; only when no key is left
  does the request fail over (a 429 stays a 429 for the client). Neither feeds the provider's
  circuit breaker: the keys' own states say when the provider is unusable.
- A provider's verdict on the request itself (a 4xx other than 401/403/404/408/409/429) goes to
  the client as it is: another backend would refuse it too.
- Past a spend cap, spillover stops: such requests go to the replicas, or get 503 with
  ``Retry-After`` until the hour or day ends (``spend.onCapReached``). Mirrors to providers
  stop too.
- Mirrors never slow or fail the client's request: each is a background task, at most
  ``mirror_max_in_flight`` at a time (past that the copy is dropped and counted), whose answer
  is read to its end and discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web

from inferscale.protocol.spend import (
    DAY,
    HOUR,
    ProviderReport,
    RouteReport,
    SpendReport,
    window_start,
)
from inferscale.protocol.table import TableBackend
from inferscale.router import picking, providers
from inferscale.router.access import estimate_tokens, spilled_tokens
from inferscale.router.codec import (
    JSON,
    AttemptFailed,
    dumps,
    error_body,
    error_response,
    sse_error,
)
from inferscale.router.context import RequestContext
from inferscale.router.limits import retry_after_header
from inferscale.router.provider_keys import KeyPool, Lease
from inferscale.router.roles import LOCAL, Plan, plan, prefill_saturated, saturated
from inferscale.router.spend import cost
from inferscale.router.stages import Stage
from inferscale.router.state import RouterState
from inferscale.router.table import CircuitBreaker, RouteRoles

log = logging.getLogger("inferscale.router")

SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_NEVER: Final = " (never)"
"""Marks a skip reason that no retry can change (the backend lacks the path)."""


BREAKER_REASONS: Final = frozenset(
    {"connect", "timeout", "status_5xx", "malformed"}
    | {"mid_stream_timeout", "mid_stream_cut", "mid_stream_malformed"}
)
"""Failures that say the provider is unwell (they open its circuit breaker when they come in a
row). Not among them: a rejected or missing key and a 404, which no waiting mends and which
the provider's status reports; a 429, which is about one key (that key backs off on its own);
and an error event that may be about the request itself."""

KEY_FAULTS: Final = frozenset({"auth", "status_429"})
"""Faults about the key that was used, not the provider: the next key is tried."""


@dataclass
class ProviderHealth:
    """What the router saw of one provider, and its circuit breaker.

    Failures by reason and when it last worked; the breaker is the endpoints' own
    (:class:`~inferscale.router.table.CircuitBreaker`), fed only :data:`BREAKER_REASONS`.
    """

    failures: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    """The last failure, in words (never a key, never request content)."""
    last_reason: str | None = None
    last_error_at: float | None = None
    last_ok_at: float | None = None
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    ejected_until_wall: float | None = None
    """When the breaker's ejection ends, as epoch seconds, for the report (None: closed)."""

    def report(self, keys: dict[str, str] | None = None) -> ProviderReport:
        """As ``GET /admin/v1/spend`` shows it, with its keys' states (by id) if it has keys."""
        return ProviderReport(
            keys=keys or {},
            failures=dict(self.failures),
            last_error=self.last_error,
            last_reason=self.last_reason,
            last_error_at=self.last_error_at,
            last_ok_at=self.last_ok_at,
            ejected_until=self.ejected_until_wall,
        )


def _attempt_failed(fault: providers.ProviderFault) -> AttemptFailed:
    """What the client gets for ``fault`` when no other backend answers."""
    body = dumps(fault.error) if fault.error is not None else None
    headers = None
    if fault.retry_after is not None:
        headers = {"Retry-After": retry_after_header(fault.retry_after)}
    return AttemptFailed(fault.message, fault.status, body, headers)


class Dispatcher(Stage):
    """Serves the models that have roles; one per router (the last stage of their route)."""

    def __init__(self, state: RouterState, replicas: Stage, other_models: Stage) -> None:
        """Serve with ``state``.

        ``replicas`` serves the model's own replicas (holding while none is ready),
        ``other_models`` another served model's ready replicas.
        """
        self.state = state
        self.replicas = replicas
        self.other_models = other_models
        self.health: dict[str, ProviderHealth] = {}
        """Per provider id: failures and last success, for the operator's status."""
        self.spilled_at: dict[str, float] = {}
        """Per route id: wall time of the last request that spilled over."""
        self.hosted_in_flight: dict[str, int] = {}
        """Per served model: requests a hosted provider is answering now. The autoscaler adds
        them to the replicas' load: spilled requests are demand the replicas did not meet, and
        without them spillover would hide the very load that should scale the model up."""
        self.mirrors: set[asyncio.Task[None]] = set()

    # -- the request path -----------------------------------------------------------------

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """Answer one request of ``ctx.model`` (whose ``roles`` is set)."""
        state = self.state
        model, body, obj = ctx.model, ctx.body, ctx.obj
        assert model is not None
        roles = model.roles
        assert roles is not None
        settings = model.route
        path = ctx.path
        wall = state.wall()
        if roles.mirror:
            self._mirror(ctx.name, roles, path, obj, wall)
        candidates = model.candidates(state.clock())
        spill = settings.spillover
        busy = saturated([e.in_flight for e in candidates], spill.in_flight_per_replica) or (
            prefill_saturated(
                [e.pending_prompt_tokens for e in candidates],
                picking.estimate_prompt_tokens(len(body)),
                spill.prompt_tokens_per_replica,
            )
        )
        skipped: dict[str, str] = {}
        capped = state.spend.capped(roles.route_id, settings.spend, wall)
        steps = plan(
            roles,
            settings,
            ready=len(candidates),
            busy=busy,
            held=state.held.get(ctx.name, 0),
            capped=capped,
            usable=lambda b: self._usable(b, path, skipped),
            r=state.random.random(),
        )
        self._count_plan(ctx.name, roles, steps, wall)
        if steps.reject:
            wait = state.spend.retry_after(roles.route_id, settings.spend, wall)
            return await self._refuse(
                ctx,
                503,
                f"The model `{ctx.name}` is at capacity and its spend cap is reached; "
                f"retry after {wait} s.",
                "spend_cap_reached",
                {"Retry-After": str(wait)},
            )
        ctx.fallible = True
        last: AttemptFailed | None = None
        unsupported: providers.Unsupported | None = None
        for index, step in enumerate(steps.steps):
            if index:
                state.metrics.bump(state.metrics.failovers, ctx.name)
            try:
                if step is LOCAL:
                    return await self.replicas(ctx)
                if step.provider is None:
                    resp = await self._other_model(ctx, step, obj)
                else:
                    resp = await self._provider(ctx, roles, step, obj)
                if index < steps.spill_steps:
                    self._count_spilled(ctx, resp)
                return resp
            except providers.Unsupported as error:
                unsupported = error
            except AttemptFailed as error:
                last = error
        return await self._give_up(ctx, last, unsupported, skipped)

    def _usable(self, backend: TableBackend, path: str, skipped: dict[str, str]) -> bool:
        state = self.state
        if backend.provider is None:
            other = state.table.models.get(backend.model)
            if other is None or not other.candidates(state.clock()):
                skipped[backend.label] = "has no ready replica"
                return False
            return True
        provider = state.table.providers[backend.provider]
        if not providers.serves_path(provider, path):
            skipped[backend.label] = f"({provider.type}) does not serve {path}" + _NEVER
            return False
        pool = state.provider_pool(backend.provider)
        if pool is None or not pool.keys:
            if backend.label not in skipped:
                self._failed(backend.provider, "no_key", "the router has no API key for it")
            skipped[backend.label] = "has no API key (its Secret or key is missing)"
            return False
        why = pool.unusable_reason(state.clock())
        if why is not None:
            skipped[backend.label] = why
            return False
        health = self.health.get(backend.provider)
        if health is not None and not health.breaker.available(state.clock()):
            skipped[backend.label] = (
                f"is ejected after {health.breaker.failures} failures in a row "
                f"(last: {health.last_reason}); it is probed again shortly"
            )
            return False
        return True

    def _count_plan(self, name: str, roles: RouteRoles, steps: Plan, wall: float) -> None:
        metrics = self.state.metrics
        if steps.spill is not None:
            key = (name, steps.spill)
            metrics.spillover[key] = metrics.spillover.get(key, 0) + 1
            self.spilled_at[roles.route_id] = wall
        if steps.capped is not None:
            metrics.bump(metrics.spend_capped, roles.route_id)

    def _count_spilled(self, ctx: RequestContext, resp: web.StreamResponse) -> None:
        """Count the tokens of a request a spillover backend answered (not one it refused)."""
        if resp.status >= 400:
            return
        prompt, completion = spilled_tokens(ctx.usage, len(ctx.body))
        self.state.metrics.count_spilled(ctx.name, prompt, completion)

    async def _other_model(
        self, ctx: RequestContext, backend: TableBackend, obj: dict[str, Any]
    ) -> web.StreamResponse:
        """Another served model's replicas, with the request renamed to it (never held)."""
        other = self.state.table.models.get(backend.model)
        if other is None or not other.ready:
            raise AttemptFailed(f"the model `{backend.model}` has no ready replica", 503)
        renamed = {**obj, "model": backend.model}
        saved = ctx.model, ctx.body, ctx.obj
        ctx.model, ctx.body, ctx.obj = other, dumps(renamed), renamed
        try:
            return await self.other_models(ctx)
        finally:
            ctx.model, ctx.body, ctx.obj = saved

    async def _provider(
        self, ctx: RequestContext, roles: RouteRoles, backend: TableBackend, obj: dict[str, Any]
    ) -> web.StreamResponse:
        name = ctx.name
        self.hosted_in_flight[name] = self.hosted_in_flight.get(name, 0) + 1
        breaker = self.health.setdefault(str(backend.provider), ProviderHealth()).breaker
        breaker.in_flight += 1
        try:
            return await self._provider_call(ctx, roles, backend, obj)
        finally:
            breaker.in_flight -= 1
            left = self.hosted_in_flight[name] - 1
            if left:
                self.hosted_in_flight[name] = left
            else:
                del self.hosted_in_flight[name]

    async def _provider_call(
        self, ctx: RequestContext, roles: RouteRoles, backend: TableBackend, obj: dict[str, Any]
    ) -> web.StreamResponse:
        state = self.state
        provider_id = str(backend.provider)
        try:
            lease, answer = await self._keyed_call(ctx.name, backend, ctx.path, obj, len(ctx.body))
        except providers.ProviderRefusal as refusal:
            self._ok(provider_id)
            return await self._answer_error(ctx, refusal.status, dumps(refusal.error), backend)
        label = backend.label
        if isinstance(answer, providers.Answer):
            self._ok(provider_id)
            lease.settle(answer.usage)
            ctx.cost += self._spend(roles.route_id, ctx.name, backend, answer.usage)
            state.count_tokens(ctx, answer.usage)
            if ctx.committed is not None:  # a held stream asked for a stream: unreachable
                await ctx.committed.write(b"data: " + answer.body + b"\n\n")
                state.log.write(ctx, answer.status, label, answer.usage)
                return ctx.committed
            state.log.write(ctx, answer.status, label, answer.usage)
            return web.Response(
                status=answer.status,
                body=answer.body,
                headers={"Content-Type": JSON, "X-Inferscale-Backend": label},
            )
        return await self._relay(ctx, roles, backend, answer, lease)

    async def _keyed_call(
        self, name: str, backend: TableBackend, path: str, obj: dict[str, Any], body_bytes: int
    ) -> tuple[Lease, providers.Answer | providers.Stream]:
        """Call the provider with its next key, and with the next while one is refused.

        A key the provider refuses or rate-limits is taken out and the next key tried, until
        one answers or none is left.

        Raises:
            AttemptFailed: no key is usable, or the provider failed (fail over).
            ProviderRefusal: the provider refused the request itself.
            Unsupported: the provider cannot serve this request.
        """
        state = self.state
        provider_id = str(backend.provider)
        pool = state.provider_pool(provider_id)
        if pool is None or not pool.keys:
            self._failed(provider_id, "no_key", "the router has no API key for it")
            raise AttemptFailed(f"provider {provider_id} has no API key", 503)
        estimate = estimate_tokens(body_bytes, obj)
        tried: list[str] = []
        last: providers.ProviderFault | None = None
        while (lease := pool.take(state.clock(), estimate, tried)) is not None:
            tried.append(lease.key.id)
            try:
                answer = await self._call(name, backend, lease.key.key, path, obj)
            except providers.ProviderFault as fault:
                where = f" (key {lease.key.id})" if len(pool.keys) > 1 else ""
                self._failed(provider_id, fault.reason, fault.message + where)
                self._count_key(provider_id, lease, fault.reason)
                if fault.reason not in KEY_FAULTS:
                    raise _attempt_failed(fault) from fault
                self._key_fault(provider_id, pool, lease, fault)
                last = fault
                continue
            except providers.ProviderRefusal:
                self._count_key(provider_id, lease, "refused")
                pool.succeeded(lease)
                raise
            self._count_key(provider_id, lease, "ok")
            pool.succeeded(lease)
            return lease, answer
        if last is not None:
            raise _attempt_failed(last)
        why = pool.unusable_reason(state.clock()) or "has every API key at its own rate limit"
        self._failed(provider_id, "keys_exhausted", f"provider {provider_id} {why}")
        raise AttemptFailed(f"provider {provider_id} {why}", 429, headers={"Retry-After": "1"})

    def _key_fault(
        self, provider_id: str, pool: KeyPool, lease: Lease, fault: providers.ProviderFault
    ) -> None:
        """Take the key out: refused until its Secret changes, rate-limited for a while."""
        if fault.reason == "auth":
            pool.revoke(lease)
            log.warning(
                "provider key refused", extra={"provider": provider_id, "key": lease.key.id}
            )
        else:
            pool.back_off(lease, self.state.clock(), fault.retry_after)

    def _count_key(self, provider_id: str, lease: Lease, outcome: str) -> None:
        metrics = self.state.metrics
        key = (provider_id, lease.key.id, outcome)
        metrics.provider_key_requests[key] = metrics.provider_key_requests.get(key, 0) + 1

    async def _call(
        self, name: str, backend: TableBackend, key: str, path: str, obj: dict[str, Any]
    ) -> providers.Answer | providers.Stream:
        state = self.state
        assert state.session is not None and backend.provider is not None
        provider = state.table.providers[backend.provider]
        model = state.table.models.get(name)
        timeouts = model.route.timeouts if model is not None else None
        total = provider.timeout_seconds
        first = total
        if timeouts is not None:
            total = min(total, timeouts.total_seconds)
            first = min(total, timeouts.first_token_seconds)
        return await providers.call(
            state.session,
            backend.provider,
            provider,
            backend.model,
            key,
            path,
            obj,
            connect_timeout=state.settings.connect_timeout_seconds,
            first_byte_timeout=first,
            total_timeout=total,
            created=int(state.wall()),
        )

    async def _relay(
        self,
        ctx: RequestContext,
        roles: RouteRoles,
        backend: TableBackend,
        stream: providers.Stream,
        lease: Lease,
    ) -> web.StreamResponse:
        state = self.state
        label = backend.label
        status = 200
        # The provider's success is the stream's clean end, not its first byte: counted at the
        # first byte, a provider that starts every answer and finishes none reset its breaker
        # with each new stream and was never ejected. A client that hangs up proves nothing.
        ended = False
        try:
            state.metrics.ttft.observe((ctx.name,), state.clock() - ctx.start)
            resp = ctx.committed
            if resp is None:
                resp = await ctx.open_stream(200, {**SSE_HEADERS, "X-Inferscale-Backend": label})
            await resp.write(stream.first)
            async for chunk in stream.rest():
                await resp.write(chunk)
            ended = True
        finally:
            stream.close()
            lease.settle(stream.usage)
            ctx.cost += self._spend(roles.route_id, ctx.name, backend, stream.usage)
            state.count_tokens(ctx, stream.usage)
            if stream.failure is not None:
                status = 504 if stream.failure == "timeout" else 502
                self._failed(
                    str(backend.provider),
                    f"mid_stream_{stream.failure}",
                    f"the stream broke after its first byte ({stream.failure})",
                )
            elif ended:
                self._ok(str(backend.provider))
        state.log.write(ctx, status, label, stream.usage)
        return resp

    async def _answer_error(
        self, ctx: RequestContext, status: int, body: bytes, backend: TableBackend
    ) -> web.StreamResponse:
        self.state.log.write(ctx, status, backend.label)
        if ctx.committed is not None:
            await ctx.committed.write(b"data: " + body + b"\n\n")
            return ctx.committed
        return web.Response(
            status=status,
            body=body,
            headers={"Content-Type": JSON, "X-Inferscale-Backend": backend.label},
        )

    async def _give_up(
        self,
        ctx: RequestContext,
        last: AttemptFailed | None,
        unsupported: providers.Unsupported | None,
        skipped: dict[str, str],
    ) -> web.StreamResponse:
        """No step answered: the most telling error for the client."""
        if last is None and unsupported is not None:
            return await self._refuse(ctx, 400, unsupported.message, None, None, unsupported.param)
        if last is None:
            why = "; ".join(
                f"{label} {why.removesuffix(_NEVER)}" for label, why in sorted(skipped.items())
            )
            if skipped and all(reason.endswith(_NEVER) for reason in skipped.values()):
                # Nothing the route has can ever serve this path: the request is wrong.
                message = f"The model `{ctx.name}` does not serve {ctx.request.path}: {why}"
                return await self._refuse(ctx, 400, message, None, None)
            message = f"No backend of `{ctx.name}` can take requests now" + (
                f": {why}" if why else ""
            )
            return await self._refuse(ctx, 503, message, "no_backend", {"Retry-After": "1"})
        status = last.status
        body = last.body or error_body(status, f"upstream failed: {last.reason}")
        committed = ctx.committed
        self.state.log.write(ctx, status, "")
        if committed is not None:
            await committed.write(b"data: " + body + b"\n\n")
            return committed
        headers = {"Content-Type": JSON}
        if last.headers:
            headers.update(last.headers)
        elif status in (429, 503):
            headers["Retry-After"] = "1"
        return web.Response(status=status, body=body, headers=headers)

    async def _refuse(
        self,
        ctx: RequestContext,
        status: int,
        message: str,
        code: str | None,
        headers: dict[str, str] | None,
        param: str | None = None,
    ) -> web.StreamResponse:
        self.state.log.write(ctx, status, "")
        if ctx.committed is not None:
            # A held stream already sent its headers: the error goes as an event.
            await ctx.committed.write(sse_error(status, message, code))
            return ctx.committed
        return error_response(status, message, param=param, code=code, headers=headers)

    # -- bookkeeping ----------------------------------------------------------------------

    def _spend(
        self, route_id: str, name: str, backend: TableBackend, usage: dict[str, Any] | None
    ) -> float:
        """Price a provider's answer into the route's spend; returns what it cost."""
        state = self.state
        if usage is None or backend.provider is None:
            return 0.0
        provider = state.table.providers.get(backend.provider)
        entry = provider.models.get(backend.model) if provider is not None else None
        if entry is None:
            return 0.0
        amount = cost(
            usage, entry.input_price_per_million_tokens, entry.output_price_per_million_tokens
        )
        state.spend.add(route_id, amount, state.wall())
        key = (route_id, backend.label)
        state.metrics.spend_total[key] = state.metrics.spend_total.get(key, 0.0) + amount
        return amount

    def _failed(self, provider_id: str, reason: str, message: str) -> None:
        state = self.state
        health = self.health.setdefault(provider_id, ProviderHealth())
        health.failures[reason] = health.failures.get(reason, 0) + 1
        wall = state.wall()
        health.last_error, health.last_error_at = message, wall
        health.last_reason = reason
        key = (provider_id, reason)
        metrics = state.metrics
        metrics.provider_failures[key] = metrics.provider_failures.get(key, 0) + 1
        if reason not in BREAKER_REASONS:
            return
        s = state.settings
        breaker = health.breaker
        now = state.clock()
        if breaker.record_failure(
            now, s.breaker_failures, s.breaker_ejection_seconds, s.breaker_max_ejection_seconds
        ):
            health.ejected_until_wall = wall + (breaker.ejected_until - now)
            metrics.bump(metrics.provider_ejections, provider_id)
            log.warning(
                "provider ejected",
                extra={"provider": provider_id, "reason": reason, "in_a_row": breaker.failures},
            )

    def _ok(self, provider_id: str) -> None:
        health = self.health.setdefault(provider_id, ProviderHealth())
        health.last_ok_at = self.state.wall()
        health.breaker.record_success()
        health.ejected_until_wall = None

    # -- mirrors --------------------------------------------------------------------------

    def _mirror(
        self, name: str, roles: RouteRoles, path: str, obj: dict[str, Any], wall: float
    ) -> None:
        state = self.state
        for backend in roles.mirror:
            percent = 100.0 if backend.mirror_percent is None else backend.mirror_percent
            if state.random.random() * 100 >= percent:
                continue
            outcome: str | None = None
            if backend.provider is not None and state.spend.capped(
                roles.route_id, state.table.models[name].route.spend, wall
            ):
                outcome = "capped"
            elif len(self.mirrors) >= state.settings.mirror_max_in_flight:
                outcome = "dropped"
            elif not self._usable(backend, path, {}):
                outcome = "unusable"
            if outcome is not None:
                self._count_mirror(name, backend, outcome)
                continue
            task = asyncio.get_running_loop().create_task(
                self._mirror_one(name, roles.route_id, backend, path, obj)
            )
            self.mirrors.add(task)
            task.add_done_callback(self.mirrors.discard)

    def _count_mirror(self, name: str, backend: TableBackend, outcome: str) -> None:
        metrics = self.state.metrics
        key = (name, backend.label, outcome)
        metrics.mirrored[key] = metrics.mirrored.get(key, 0) + 1

    async def _mirror_one(
        self, name: str, route_id: str, backend: TableBackend, path: str, obj: dict[str, Any]
    ) -> None:
        outcome = "ok"
        try:
            if backend.provider is None:
                outcome = await self._mirror_model(name, backend, path, obj)
            else:
                outcome = await self._mirror_provider(name, route_id, backend, path, obj)
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except providers.Unsupported:
            outcome = "error"
        except providers.ProviderRefusal:
            outcome = "refused"
        except (aiohttp.ClientError, OSError, TimeoutError):
            outcome = "error"
        finally:
            self._count_mirror(name, backend, outcome)

    async def _mirror_provider(
        self, name: str, route_id: str, backend: TableBackend, path: str, obj: dict[str, Any]
    ) -> str:
        provider_id = str(backend.provider)
        breaker = self.health.setdefault(provider_id, ProviderHealth()).breaker
        breaker.in_flight += 1  # a copy can be the half-open breaker's one probe too
        try:
            lease, answer = await self._keyed_call(name, backend, path, obj, len(dumps(obj)))
        except AttemptFailed:
            return "error"
        finally:
            breaker.in_flight -= 1
        if isinstance(answer, providers.Answer):
            self._ok(provider_id)
            lease.settle(answer.usage)
            self._spend(route_id, name, backend, answer.usage)
            return "ok"
        try:
            async for _ in answer.rest():
                pass
        finally:
            answer.close()
            lease.settle(answer.usage)
            self._spend(route_id, name, backend, answer.usage)
        if answer.failure is not None:
            return "error"
        self._ok(provider_id)  # as for a served stream: its clean end, not its first byte
        return "ok"

    async def _mirror_model(
        self, name: str, backend: TableBackend, path: str, obj: dict[str, Any]
    ) -> str:
        state = self.state
        other = state.table.models.get(backend.model)
        candidates = other.candidates(state.clock()) if other is not None else []
        if other is None or not candidates or state.session is None:
            return "unusable"
        other.counter += 1
        endpoint = picking.least_in_flight(candidates, other.counter)
        timeout = aiohttp.ClientTimeout(
            total=other.route.timeouts.total_seconds,
            sock_connect=state.settings.connect_timeout_seconds,
        )
        endpoint.in_flight += 1
        try:
            async with state.session.post(
                endpoint.base_url + path,
                data=dumps({**obj, "model": backend.model}),
                headers={"Content-Type": JSON},
                timeout=timeout,
            ) as response:
                async for _ in response.content.iter_any():
                    pass
                return "ok" if response.status < 400 else "error"
        finally:
            endpoint.in_flight -= 1

    async def stop_mirrors(self) -> None:
        """Cancel the mirror copies still running (at shutdown)."""
        tasks = list(self.mirrors)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- status ---------------------------------------------------------------------------

    def _selections(self) -> dict[str, tuple[dict[str, int], float]]:
        """Route id -> (candidate -> requests, cost saved) of the selecting routes served here.

        The metrics count by the name clients send; the table says which route that is.
        """
        table, metrics = self.state.table.table, self.state.log.metrics
        out: dict[str, tuple[dict[str, int], float]] = {}
        for (name, model), n in metrics.selections.items():
            entry = table.models.get(name) if table is not None else None
            if entry is None or entry.route_id is None:
                continue
            counts, _ = out.setdefault(entry.route_id, ({}, metrics.cost_saved.get(name, 0.0)))
            counts[model] = n
        return out

    def _key_states(self, provider_id: str, now: float) -> dict[str, str] | None:
        """A provider's keys by id and their state, when it has several (else ``None``)."""
        pool = self.state.provider_pool(provider_id)
        if pool is None or len(pool.keys) < 2:
            return None
        clock = self.state.clock()
        return {key.id: key.state(clock) for key in pool.keys}

    def report(self, now: float) -> SpendReport:
        """``GET /admin/v1/spend``: this router's spend, spillover and provider health."""
        state = self.state
        routes: dict[str, RouteReport] = {}
        selections = self._selections()
        for route_id in sorted(set(state.spend.routes()) | set(self.spilled_at) | set(selections)):
            hour, day = state.spend.mine(route_id, now)
            counts, saved = selections.get(route_id, ({}, 0.0))
            routes[route_id] = RouteReport(
                hour=hour,
                day=day,
                last_spill_at=self.spilled_at.get(route_id),
                selections=counts,
                cost_saved=saved,
            )
        return SpendReport(
            process=state.id_prefix,
            now=now,
            hour_start=window_start(now, HOUR),
            day_start=window_start(now, DAY),
            routes=routes,
            providers={
                k: v.report(self._key_states(k, now)) for k, v in sorted(self.health.items())
            },
            cache_off=state.cache_off,
            difficulty_error=state.difficulty_error,
        )
