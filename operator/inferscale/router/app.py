"""The router's HTTP server: the OpenAI API in front of the engines, health, metrics, admin API.

``create_app(settings, table, upstream_session=...)`` returns an aiohttp application (aiohttp
server and aiohttp client: the pair that won ``bench/gateway``); ``serve(settings)`` runs one
until SIGTERM. All state lives on one :class:`Router` per app; there are no module-level
singletons. The pickers and the table are pure (``picking``, ``table``); this module does the
I/O around them.

Request path: read the body (bounded in size and time), parse it once, find the model, pick an
endpoint, forward the body byte for byte (unknown fields untouched), and relay the answer:
non-streaming bodies whole, streams chunk by chunk as they arrive.

Failure behaviour:

- Bad input never reaches an engine: malformed JSON, a body that is not an object, a missing
  or wrong-typed ``model``/``stream``/``stream_options`` get 400; an unknown model 404
  ``model_not_found``; a body over ``max_request_bytes`` 413; a client slower than
  ``client_body_timeout_seconds`` to send its body 408. Every refusal is an OpenAI error object.
- Connect errors, an engine that drops the connection before answering, and the route's
  ``retries.onStatus`` (502/503/504) are retried on another endpoint, up to
  ``retries.maxAttempts`` in all, only while nothing has reached the client. Once a stream has
  started, a broken engine ends it with an SSE ``error`` event and no ``[DONE]``, so the client
  can tell the answer is incomplete (never a clean end).
- Each failure counts towards the endpoint's circuit breaker; ``breaker_failures`` in a row eject
  it, and after the ejection one request at a time probes it back.
- ``timeouts.firstTokenSeconds`` bounds the wait for the engine's answer (and any stall between
  chunks), ``timeouts.totalSeconds`` the whole request: past either, 504 (or an SSE error event
  once streaming).
- An engine answer that is not HTTP, or a non-streaming 2xx whose JSON body does not parse, is
  502 with a message that says so.
- A client that disconnects cancels its handler (handler cancellation), which closes the
  upstream connection: the engine sees the disconnect and frees the sequence.
- A known model with no ready endpoint holds the request in a bounded per-model queue until the
  table gives it one; held streams get SSE comment keep-alives; past ``holdQueue.maxRequests``
  or ``maxWaitSeconds`` the answer is 503 with ``Retry-After`` (an SSE error event if the
  stream's headers already went out with a keep-alive), never 404.
- Client access (``access``, ``docs/access.md``): 401 for a missing or unknown key while keys
  are required, 403 for a model the key may not use, 429 with ``Retry-After`` past a rate or
  budget; a shared limits store (Redis) that fails leaves the router serving with local limits,
  reported in ``/readyz``'s body and the metrics.
- The admin API answers 401 without a bearer token, 403 with a wrong one (or when no token is
  configured), 400 for an invalid table or credentials and 409 for an older version. An
  invalid credentials document is never quoted back or logged (it holds keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import math
import os
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from inferscale.api.validation import describe_errors
from inferscale.protocol.credentials import RouterCredentials, StaleCredentialsError, summary
from inferscale.protocol.spend import ElsewhereSpend
from inferscale.protocol.table import RoutingTable, StaleTableError
from inferscale.router import picking
from inferscale.router.access import (
    ANONYMOUS,
    Access,
    Grant,
    Refusal,
    estimate_tokens,
    load_credentials_file,
)
from inferscale.router.codec import (
    JSON,
    AttemptFailed,
    dumps,
    error_response,
    loads,
    sse_error,
)
from inferscale.router.dispatch import Dispatcher
from inferscale.router.limits import LocalLimiter
from inferscale.router.limits_redis import SharedLimiter
from inferscale.router.metrics import CONTENT_TYPE, RouterMetrics
from inferscale.router.settings import RouterSettings
from inferscale.router.spend import SpendLedger
from inferscale.router.table import EndpointState, EndpointTable, ModelState
from inferscale.serving import serve_app

log = logging.getLogger("inferscale.router")


ROUTER_KEY: Final[web.AppKey[Router]] = web.AppKey("inferscale_router")
SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
KEEPALIVE: Final = b": waiting for a replica\n\n"
# Request headers passed on to engines; everything else (Authorization above all) stays here.
FORWARDED: Final = ("Content-Type", "Accept", "X-Request-Id", "Traceparent")
ENGINE_METRICS: Final = {
    # engine → (waiting requests, KV-cache use 0..1)
    "vllm": ("vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"),
    "sim": ("vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"),
    "sglang": ("sglang:num_queue_reqs", "sglang:token_usage"),
    "tgi": ("tgi_queue_size", ""),
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_Retry = AttemptFailed
"""This attempt failed before anything reached the client; try another endpoint."""


class _Final(AttemptFailed):
    """An attempt failed in a way not retried on another endpoint (a timeout, a broken answer).

    Raised only for a caller that has other backends to fail over to (``ctx.fallible``).
    """


class Router:
    """Per-app state and the request handlers."""

    def __init__(
        self,
        settings: RouterSettings,
        table: EndpointTable,
        session: aiohttp.ClientSession | None,
        *,
        admin_token: str | None,
        log_sink: Callable[[str], object] | None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """Wire the collaborators; the session is created at startup when none is given.

        ``clock`` (monotonic) times requests; ``wall`` (epoch seconds) dates spend windows.
        """
        self.settings = settings
        self.table = table
        self.session = session
        self.own_session = session is None
        self.admin_token = admin_token.encode() if admin_token else None
        self.log_sink = log_sink
        self.clock = clock
        self.metrics = RouterMetrics()
        self.access = Access(
            LocalLimiter(clock, time.time), require_client_key=settings.require_client_key
        )
        self.random = random.Random()
        self.held: dict[str, int] = {}
        self.ready_events: dict[str, asyncio.Event] = {}
        self.timeouts: dict[str, aiohttp.ClientTimeout] = {}
        self.draining = False
        self.ids = itertools.count(1)
        self.id_prefix = f"{os.getpid():x}{int(time.time()) & 0xFFFFFF:x}"
        self.tasks: list[asyncio.Task[None]] = []
        self.stop = asyncio.Event()
        self.wall = wall
        self.spend = SpendLedger()
        self.dispatcher = Dispatcher(self)
        table.subscribe(self.on_table)
        self.on_table(table)

    # -- table --------------------------------------------------------------------------

    def on_table(self, table: EndpointTable) -> None:
        """After a swap: rebuild per-route timeouts; wake held requests whose model can serve."""
        # No ``total`` timer per request (a timer armed and cancelled per request costs more
        # than the rest of the bookkeeping): a non-streaming answer arrives in one piece, so
        # the read timeout bounds it; a stream is checked against its deadline at each chunk.
        self.timeouts = {
            name: aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.settings.connect_timeout_seconds,
                sock_read=min(m.route.timeouts.first_token_seconds, m.route.timeouts.total_seconds),
            )
            for name, m in table.models.items()
        }
        for name in list(self.ready_events):
            model = table.models.get(name)
            if model is None or model.ready:
                self.ready_events.pop(name).set()

    def apply_table(self, table: RoutingTable, source: str) -> bool:
        """Install ``table`` (StaleTableError when older); log what changed."""
        changed = self.table.replace(table)
        if changed:
            ready = sum(len(m.ready) for m in self.table.models.values())
            log.info(
                "routing table applied",
                extra={"version": table.version, "source": source, "ready": ready},
            )
        return changed

    def apply_credentials(self, credentials: RouterCredentials, source: str) -> bool:
        """Install ``credentials`` (StaleCredentialsError when older); log the counts only."""
        changed = self.access.replace(credentials)
        if changed:
            log.info(
                "credentials applied",
                extra={
                    "version": credentials.version,
                    "source": source,
                    "providers": len(credentials.provider_keys),
                    "client_keys": len(credentials.client_keys),
                },
            )
        return changed

    def provider_key(self, provider_id: str) -> str | None:
        """The API key of InferenceProvider ``<namespace>/<name>`` (``None``: none held)."""
        return self.access.provider_key(provider_id)

    # -- lifecycle ----------------------------------------------------------------------

    async def on_startup(self, _app: web.Application) -> None:
        """Create the upstream session; start the table-file and scrape loops."""
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.settings.upstream_connections,
                    limit_per_host=0,
                    keepalive_timeout=60,
                    ttl_dns_cache=300,
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        if self.settings.redis_url:
            self.access.shared = shared_limiter(self.settings, self.access.local)
        if self.settings.table_poll_seconds > 0:
            if self.settings.table_file:
                path = Path(self.settings.table_file)
                self.tasks.append(asyncio.create_task(self.watch_file(path, self._load_table)))
            if self.settings.credentials_file:
                path = Path(self.settings.credentials_file)
                self.tasks.append(
                    asyncio.create_task(self.watch_file(path, self._load_credentials))
                )
        if self.settings.scrape_interval_seconds > 0:
            self.tasks.append(asyncio.create_task(self.scrape_engines()))

    async def on_shutdown(self, _app: web.Application) -> None:
        """Stop the loops; wake held requests so they answer now."""
        self.stop.set()
        for event in self.ready_events.values():
            event.set()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.dispatcher.stop_mirrors()

    async def on_cleanup(self, _app: web.Application) -> None:
        """Close the upstream session if it is ours, and the limits store."""
        if self.own_session and self.session is not None:
            await self.session.close()
        if self.access.shared is not None:
            await self.access.shared.close()

    async def watch_file(self, path: Path, load: Callable[[Path], Awaitable[None]]) -> None:
        """Re-read ``path`` when it changes (a ConfigMap or Secret update); until shutdown."""
        seen = _mtime(path)
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.settings.table_poll_seconds)
            mtime = _mtime(path)
            if mtime is None or mtime == seen:
                continue
            seen = mtime
            await load(path)

    async def _load_table(self, path: Path) -> None:
        try:
            table = await asyncio.to_thread(load_table_file, path)
            self.apply_table(table, str(path))
        except StaleTableError:
            pass  # the operator already pushed something newer
        except (OSError, ValueError) as error:
            log.warning("table file unusable: %s", error)

    async def _load_credentials(self, path: Path) -> None:
        try:
            credentials = await asyncio.to_thread(load_credentials_file, path)
            self.apply_credentials(credentials, str(path))
        except StaleCredentialsError:
            pass  # the operator already pushed something newer
        except OSError as error:
            log.warning("credentials file unreadable: %s", error)
        except ValidationError as error:
            log.warning("credentials file invalid: %s", _problems(error))

    async def scrape_engines(self) -> None:
        """Read each endpoint's queue and KV-cache use; unknown or failed means 0."""
        assert self.session is not None
        timeout = aiohttp.ClientTimeout(total=max(self.settings.scrape_interval_seconds, 0.5))

        async def one(e: EndpointState) -> None:
            names = ENGINE_METRICS.get(e.engine)
            if names is None or self.session is None:
                return
            try:
                async with self.session.get(e.base_url + "/metrics", timeout=timeout) as resp:
                    text = (await resp.read()).decode("utf-8", "replace")
                    e.queued, e.kv_usage = parse_engine_metrics(text, names)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                e.queued, e.kv_usage = 0, 0.0

        while not self.stop.is_set():
            await asyncio.gather(*(one(e) for e in list(self.table.endpoints())))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.settings.scrape_interval_seconds)

    # -- small endpoints ----------------------------------------------------------------

    async def healthz(self, _request: web.Request) -> web.StreamResponse:
        """Liveness: the process answers."""
        return web.Response(text="ok")

    async def readyz(self, _request: web.Request) -> web.StreamResponse:
        """Readiness: a table is loaded and we are not draining."""
        if self.draining:
            return web.Response(status=503, text="draining")
        if self.table.table is None:
            return web.Response(status=503, text="no routing table yet")
        degraded = self.access.degraded()
        # Still ready: a router whose limits went local must keep serving.
        return web.Response(text=f"ok (degraded: {degraded})" if degraded else "ok")

    async def metrics_endpoint(self, _request: web.Request) -> web.StreamResponse:
        """Prometheus text format."""
        endpoints = [(name, e) for name, m in self.table.models.items() for e in m.endpoints]
        in_flight = [(name, e.pod, e.in_flight) for name, e in endpoints]
        pending = [(name, e.pod, e.pending_prompt_tokens) for name, e in endpoints]
        held = [(name, self.held.get(name, 0)) for name in self.table.models]
        now = self.wall()
        spend = [(r, *self.spend.mine(r, now)) for r in self.spend.routes()]
        text = self.metrics.render(
            in_flight,
            held,
            self.table.version,
            spend,
            extra=self.access.metric_lines(),
            pending_prompt_tokens=pending,
        )
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/models``: every model in the table (at zero too: those are held, not 404).

        With client keys, only the models the caller's key may use.
        """
        names = sorted(self.table.models)
        if self.access.active:
            policy = self.access.identify(request.headers.get("Authorization"))
            if isinstance(policy, Refusal):
                return _refusal(policy)
            names = self.access.visible(policy, names)
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "inferscale"}
            for name in names
        ]
        return web.Response(
            body=json.dumps({"object": "list", "data": data}).encode(),
            headers={"Content-Type": JSON},
        )

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        """Unknown path or method: an OpenAI error rather than aiohttp's text page."""
        return error_response(404, f"no route for {request.method} {request.path}")

    # -- admin API ----------------------------------------------------------------------

    def _auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or len(header) <= 7:
            return error_response(
                401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if self.admin_token is None:
            return error_response(403, "the admin API is disabled: no token is configured")
        if not hmac.compare_digest(header[7:].encode(), self.admin_token):
            return error_response(403, "invalid token")
        return None

    async def get_table(self, request: web.Request) -> web.StreamResponse:
        """``GET /admin/v1/routing-table``: the table held."""
        if (refused := self._auth(request)) is not None:
            return refused
        if self.table.table is None:
            return error_response(404, "no routing table yet")
        body = self.table.table.model_dump_json(by_alias=True).encode()
        return web.Response(body=body, headers={"Content-Type": JSON})

    async def put_table(self, request: web.Request) -> web.StreamResponse:
        """``PUT /admin/v1/routing-table``: install a newer table."""
        if (refused := self._auth(request)) is not None:
            return refused
        try:
            body = await request.read()
            table = RoutingTable.model_validate_json(body)
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, "routing table too large")
        except ValidationError as error:
            return error_response(400, f"invalid routing table: {_problems(error)}")
        try:
            changed = self.apply_table(table, "admin API")
        except StaleTableError as error:
            return error_response(409, str(error), code="stale_version")
        doc = {"version": table.version, "changed": changed, "models": len(table.models)}
        return web.Response(body=json.dumps(doc).encode(), headers={"Content-Type": JSON})

    async def get_credentials(self, request: web.Request) -> web.StreamResponse:
        """``GET /admin/v1/credentials``: version and counts held (never a key or digest)."""
        if (refused := self._auth(request)) is not None:
            return refused
        if self.access.credentials is None:
            return error_response(404, "no credentials yet")
        body = json.dumps(summary(self.access.credentials)).encode()
        return web.Response(body=body, headers={"Content-Type": JSON})

    async def put_credentials(self, request: web.Request) -> web.StreamResponse:
        """``PUT /admin/v1/credentials``: install newer credentials."""
        if (refused := self._auth(request)) is not None:
            return refused
        try:
            credentials = RouterCredentials.model_validate_json(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, "credentials too large")
        except ValidationError as error:
            return error_response(400, f"invalid credentials: {_problems(error)}")
        try:
            changed = self.apply_credentials(credentials, "admin API")
        except StaleCredentialsError as error:
            return error_response(409, str(error), code="stale_version")
        doc = {"version": credentials.version, "changed": changed}
        return web.Response(body=json.dumps(doc).encode(), headers={"Content-Type": JSON})

    async def get_held(self, request: web.Request) -> web.StreamResponse:
        """``GET /admin/v1/held``: held and in-flight requests per model, for the autoscaler.

        ``inFlight`` counts requests at the model's replicas, ``hostedInFlight`` those a hosted
        provider answers for it now (spilled over, or failed over).
        """
        if (refused := self._auth(request)) is not None:
            return refused
        hosted = self.dispatcher.hosted_in_flight
        models = {
            name: {
                "held": self.held.get(name, 0),
                "inFlight": sum(e.in_flight for e in m.endpoints),
                "hostedInFlight": hosted.get(name, 0),
                "readyEndpoints": len(m.ready),
            }
            for name, m in self.table.models.items()
        }
        doc = {"version": self.table.version, "models": models}
        return web.Response(body=json.dumps(doc).encode(), headers={"Content-Type": JSON})

    async def get_spend(self, request: web.Request) -> web.StreamResponse:
        """``GET /admin/v1/spend``: this router's spend per route, spillover, provider health."""
        if (refused := self._auth(request)) is not None:
            return refused
        body = self.dispatcher.report(self.wall()).model_dump_json(by_alias=True).encode()
        return web.Response(body=body, headers={"Content-Type": JSON})

    async def put_spend(self, request: web.Request) -> web.StreamResponse:
        """``PUT /admin/v1/spend``: what the other routers spent (the operator's sum)."""
        if (refused := self._auth(request)) is not None:
            return refused
        try:
            doc = ElsewhereSpend.model_validate_json(await request.read())
        except ValidationError as error:
            return error_response(400, f"invalid spend: {describe_errors(error)[0]}")
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, "spend document too large")
        self.spend.set_elsewhere(
            doc.hour_start,
            doc.day_start,
            {route: (s.hour, s.day) for route, s in doc.routes.items()},
        )
        return web.Response(
            body=json.dumps({"routes": len(doc.routes)}).encode(),
            headers={"Content-Type": JSON},
        )

    # -- the proxy ----------------------------------------------------------------------

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``."""
        start = self.clock()
        policy = ANONYMOUS
        if self.access.active:  # the key first: an unknown caller learns nothing else
            identified = self.access.identify(request.headers.get("Authorization"))
            if isinstance(identified, Refusal):
                return self._refuse_access(request, start, identified)
            policy = identified
        content = request.content
        try:
            if content.is_eof():
                body = await request.read()  # already buffered: no timer needed
            else:
                async with asyncio.timeout(self.settings.client_body_timeout_seconds):
                    body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(request, start, 413, "request body too large", "request_too_large")
        except TimeoutError:
            return self._refuse(request, start, 408, "the request body was not sent in time")
        try:
            obj = loads(body)
        except (ValueError, RecursionError):
            return self._refuse(request, start, 400, "the request body is not valid JSON")
        if not isinstance(obj, dict):
            return self._refuse(request, start, 400, "the request body must be a JSON object")
        name = obj.get("model")
        if not isinstance(name, str) or not name:
            return self._refuse(
                request, start, 400, "model: a non-empty string is required", "model"
            )
        stream = obj.get("stream")
        if stream is not None and not isinstance(stream, bool):
            return self._refuse(request, start, 400, "stream: must be a boolean", "stream")
        options = obj.get("stream_options")
        if options is not None and not isinstance(options, dict):
            return self._refuse(request, start, 400, "stream_options: must be an object")
        grant: Grant | None = None
        if policy is not ANONYMOUS:
            refusal = self.access.authorize(policy, name)
            if refusal is not None:
                return self._refuse_access(request, start, refusal, policy.client)
        model = self.table.models.get(name)
        if model is None:
            return self._refuse(
                request,
                start,
                404,
                f"The model `{name}` does not exist.",
                "model",
                "model_not_found",
            )
        if policy.limited:
            estimate = estimate_tokens(len(body), obj)
            access = self.access
            # In-process limits need no coroutine per request; a shared store is awaited.
            admitted = (
                access.admit_in_process(policy, estimate)
                if access.shared is None
                else await access.admit(policy, estimate)
            )
            if isinstance(admitted, Refusal):
                return self._refuse_access(request, start, admitted, policy.client)
            grant = admitted
        ctx = RequestContext(request, name, bool(stream), start, next(self.ids))
        ctx.client = policy.client
        try:
            if model.roles is not None:  # hosted or other-model backends: spillover, fallback...
                return await self.dispatcher.serve(ctx, model, body, obj)
            if not model.ready:
                refused = await self.hold(ctx, model)
                if refused is not None:
                    ctx.status = refused.status
                    return refused
                assert ctx.model is not None
                model = ctx.model
            return await self.forward(ctx, model, body, obj, ctx.committed)
        finally:
            if grant is not None:
                # Also when the client went away (handler cancelled): the engine's tokens up to
                # then are unknown, so the estimate stays charged (status 200 until answered).
                self.access.settle(grant, ctx.usage, ctx.status)

    async def hold(self, ctx: RequestContext, model: ModelState) -> web.StreamResponse | None:
        """Wait for the model to get a ready endpoint; sets ``ctx.model`` when it has one."""
        name = ctx.name
        bounds = model.route.hold_queue
        retry_after = str(max(1, math.ceil(min(bounds.max_wait_seconds, 60))))
        if self.held.get(name, 0) >= bounds.max_requests:
            self.metrics.held_total[(name, "full")] = (
                self.metrics.held_total.get((name, "full"), 0) + 1
            )
            if ctx.fallible:
                raise _Final(
                    f"the model `{name}` is starting and its hold queue is full",
                    503,
                    headers={"Retry-After": retry_after},
                )
            return self._refuse(
                ctx.request,
                ctx.start,
                503,
                f"The model `{name}` is starting and its hold queue is full; retry later.",
                code="model_unavailable",
                headers={"Retry-After": retry_after},
            )
        self.held[name] = self.held.get(name, 0) + 1
        deadline = ctx.start + bounds.max_wait_seconds
        resp: web.StreamResponse | None = None
        outcome = "timeout"
        try:
            # Bounded: each pass either waits until the deadline or a keep-alive, or returns.
            while not self.stop.is_set():
                now = self.clock()
                current = self.table.models.get(name)
                if current is None:
                    outcome = "removed"
                    break
                if current.ready:
                    ctx.model, ctx.committed = current, resp
                    outcome = "served"
                    return None
                left = deadline - now
                if left <= 0:
                    break
                event = self.ready_events.get(name)
                if event is None:
                    event = self.ready_events[name] = asyncio.Event()
                wait = min(left, self.settings.keepalive_seconds) if ctx.stream else left
                try:
                    async with asyncio.timeout(wait):
                        await event.wait()
                except TimeoutError:
                    if ctx.stream and self.clock() < deadline:
                        if resp is None:
                            resp = web.StreamResponse(status=200, headers=SSE_HEADERS)
                            await resp.prepare(ctx.request)
                        await resp.write(KEEPALIVE)
        finally:
            self.held[name] -= 1
            key = (name, outcome)
            self.metrics.held_total[key] = self.metrics.held_total.get(key, 0) + 1
        if ctx.fallible:
            ctx.committed = resp
            reason = "was removed" if outcome == "removed" else "has no ready replica yet"
            raise _Final(f"the model `{name}` {reason}", 503, headers={"Retry-After": retry_after})
        if outcome == "removed":
            message = f"The model `{name}` does not exist."
            if resp is not None:
                await resp.write(sse_error(404, message, "model_not_found"))
                return resp
            return self._refuse(ctx.request, ctx.start, 404, message, "model", "model_not_found")
        message = f"The model `{name}` has no ready replica yet; retry after {retry_after} s."
        if resp is not None:
            ctx.status = 503
            await resp.write(sse_error(503, message, "model_unavailable"))
            self.log_access(ctx, 503, "")
            return resp
        return self._refuse(
            ctx.request,
            ctx.start,
            503,
            message,
            code="model_unavailable",
            headers={"Retry-After": retry_after},
        )

    def _pick(
        self, model: ModelState, candidates: list[EndpointState], obj: dict[str, Any]
    ) -> EndpointState:
        route = model.route
        model.counter += 1
        strategy = route.strategy
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
        return picking.pick(strategy, candidates, counter=model.counter, r=self.random.random())

    async def forward(
        self,
        ctx: RequestContext,
        model: ModelState,
        body: bytes,
        obj: dict[str, Any],
        committed: web.StreamResponse | None,
    ) -> web.StreamResponse:
        request = ctx.request
        route = model.route
        headers = {k: v for k in FORWARDED if (v := request.headers.get(k)) is not None}
        url_path = request.path
        tried: list[EndpointState] = []
        prompt_tokens = picking.estimate_prompt_tokens(len(body))
        last = _Retry("no endpoint could take the request", 503)
        for attempt in range(route.retries.max_attempts):
            if attempt:
                # Retry from the table as it is now: a push during the failed attempt may have
                # removed that pod (a scale-down) or added the one that can take the request.
                model = self.table.models.get(model.name, model)
            now = self.clock()
            candidates = model.candidates(now)
            if tried:
                failed = {e.address for e in tried}
                candidates = [e for e in candidates if e.address not in failed]
            if not candidates:
                break
            endpoint = self._pick(model, candidates, obj)
            if attempt:
                self.metrics.bump(self.metrics.retries, ctx.name)
            tried.append(endpoint)
            endpoint.in_flight += 1
            endpoint.pending_prompt_tokens += prompt_tokens
            ctx.prefill_tokens = prompt_tokens
            try:
                return await self._attempt(ctx, model, endpoint, url_path, body, headers, committed)
            except _Final:
                raise
            except _Retry as retry:
                last = retry
                self._failed(endpoint)
            finally:
                endpoint.in_flight -= 1
                _prefilled(ctx, endpoint)
        if ctx.fallible:
            if not tried:
                last = _Retry(f"no replica of `{model.name}` can take the request", 503)
            raise last
        if committed is not None:
            await committed.write(sse_error(last.status, f"upstream failed: {last.reason}"))
            self.log_access(ctx, last.status, tried[-1].pod if tried else "", attempts=len(tried))
            return committed
        pod = tried[-1].pod if tried else ""
        if last.body is not None:  # the engine's own answer to the last attempt, as it was
            self.log_access(ctx, last.status, pod, attempts=len(tried))
            return web.Response(status=last.status, body=last.body, headers={"Content-Type": JSON})
        headers_out = {"Retry-After": "1"} if last.status == 503 else None
        message = (
            f"all endpoints of `{ctx.name}` are failing; retry later"
            if not tried
            else f"upstream failed after {len(tried)} attempt(s): {last.reason}"
        )
        self.log_access(ctx, last.status, pod, attempts=len(tried))
        return error_response(last.status, message, headers=headers_out)

    def _failed(self, endpoint: EndpointState) -> None:
        s = self.settings
        if endpoint.record_failure(
            self.clock(),
            s.breaker_failures,
            s.breaker_ejection_seconds,
            s.breaker_max_ejection_seconds,
        ):
            self.metrics.bump(self.metrics.ejections, endpoint.pod)
            log.warning("endpoint ejected", extra={"endpoint": endpoint.pod})

    async def _attempt(
        self,
        ctx: RequestContext,
        model: ModelState,
        endpoint: EndpointState,
        path: str,
        body: bytes,
        headers: dict[str, str],
        committed: web.StreamResponse | None,
    ) -> web.StreamResponse:
        assert self.session is not None
        route = model.route
        try:
            async with self.session.post(
                endpoint.base_url + path,
                data=body,
                headers=headers,
                timeout=self.timeouts.get(ctx.name) or aiohttp.ClientTimeout(total=600),
            ) as up:
                status = up.status
                if status in route.retries.on_status:
                    raise _Retry(f"HTTP {status}", status, await up.read())
                ctype = up.headers.get("Content-Type", JSON)
                if ctype.startswith("text/event-stream"):
                    total = route.timeouts.total_seconds
                    return await self._relay_stream(ctx, endpoint, up, ctype, committed, total)
                data = await up.read()
        except _Retry:
            raise
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as error:
            raise _Retry(f"cannot connect to {endpoint.pod}: {type(error).__name__}") from error
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError,
            aiohttp.ClientPayloadError,
        ) as error:
            raise _Retry(f"{endpoint.pod} closed the connection: {type(error).__name__}") from error
        except TimeoutError:
            self._failed(endpoint)
            return await self._end(
                ctx, endpoint, committed, 504, "the engine did not answer in time"
            )
        except aiohttp.ClientResponseError as error:
            self._failed(endpoint)
            return await self._end(
                ctx,
                endpoint,
                committed,
                502,
                f"the engine sent an invalid HTTP response ({error.message})",
            )
        except aiohttp.ClientError as error:
            self._failed(endpoint)
            return await self._end(
                ctx, endpoint, committed, 502, f"upstream error: {type(error).__name__}"
            )
        if status < 500:
            endpoint.record_success()
        else:
            self._failed(endpoint)
        usage = None
        if 200 <= status < 300 and ctype.startswith(JSON):
            try:
                doc = loads(data)
            except (ValueError, RecursionError):
                self._failed(endpoint)
                return await self._end(
                    ctx, endpoint, committed, 502, "the engine answered invalid JSON"
                )
            usage = doc.get("usage") if isinstance(doc, dict) else None
        self.count_tokens(ctx, usage)
        if committed is not None:  # a held stream asked for stream but got JSON: pass it as data
            await committed.write(b"data: " + data + b"\n\n")
            self.log_access(ctx, status, endpoint.pod)
            return committed
        self.log_access(ctx, status, endpoint.pod, usage)
        return web.Response(
            status=status,
            body=data,
            headers={"Content-Type": ctype, "X-Inferscale-Pod": endpoint.pod},
        )

    async def _relay_stream(
        self,
        ctx: RequestContext,
        endpoint: EndpointState,
        up: aiohttp.ClientResponse,
        ctype: str,
        committed: web.StreamResponse | None,
        total_seconds: float,
    ) -> web.StreamResponse:
        chunks = up.content.iter_any()
        # The first chunk decides: nothing has reached the client yet, so a failure is retried.
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            first = b""
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError,
            aiohttp.ClientPayloadError,
        ) as error:
            raise _Retry(
                f"{endpoint.pod} broke off before the first token: {type(error).__name__}"
            ) from error
        self.metrics.ttft.observe((ctx.name,), self.clock() - ctx.start)
        _prefilled(ctx, endpoint)
        resp = committed
        if resp is None:
            resp = web.StreamResponse(
                status=up.status,
                headers={
                    "Content-Type": ctype,
                    "Cache-Control": "no-cache",
                    "X-Inferscale-Pod": endpoint.pod,
                },
            )
            await resp.prepare(ctx.request)
        # The stream's last USAGE_TAIL_BYTES or more, for its usage event: an engine or a proxy
        # in between may split that event over any number of reads. Chunks are kept, not
        # joined, so a long stream copies nothing per chunk.
        tail: deque[bytes] = deque((first,))
        tail_bytes = len(first)
        status = up.status
        try:
            if first:
                await resp.write(first)
            deadline = ctx.start + total_seconds
            async for chunk in chunks:
                await resp.write(chunk)
                tail.append(chunk)
                tail_bytes += len(chunk)
                while tail_bytes - len(tail[0]) >= USAGE_TAIL_BYTES:
                    tail_bytes -= len(tail.popleft())
                if self.clock() > deadline:
                    status = 504
                    await resp.write(
                        sse_error(504, "the request ran past timeouts.totalSeconds", "timeout")
                    )
                    break
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            self._failed(endpoint)
            status = 502
            await resp.write(
                sse_error(502, f"the engine {endpoint.pod} broke off the stream", "upstream_error")
            )
        except TimeoutError:
            self._failed(endpoint)
            status = 504
            await resp.write(sse_error(504, "the engine stalled mid-stream", "timeout"))
        except asyncio.CancelledError:
            # The client hung up, which cancels this handler. A client may close as soon as it
            # has read [DONE], before the engine's end of stream reaches the router: it was
            # answered in full, and the usage it was sent is what it used (and what its limits
            # and budgets are charged; without it the estimate stays charged).
            usage = stream_usage(b"".join(tail))
            if usage is not None:
                self.count_tokens(ctx, usage)
                self.log_access(ctx, status, endpoint.pod, usage)
            raise
        else:
            if status != 504:
                endpoint.record_success()
        # A stream that broke off (502) after relaying the engine's usage event still delivered
        # those tokens: count them too. A 504 cut the stream short, so its usage is unknown.
        usage = stream_usage(b"".join(tail)) if status in (200, 502) else None
        self.count_tokens(ctx, usage)
        self.log_access(ctx, status, endpoint.pod, usage)
        return resp

    async def _end(
        self,
        ctx: RequestContext,
        endpoint: EndpointState,
        committed: web.StreamResponse | None,
        status: int,
        message: str,
    ) -> web.StreamResponse:
        if ctx.fallible:
            raise _Final(f"{endpoint.pod}: {message}", status)
        self.log_access(ctx, status, endpoint.pod)
        if committed is not None:
            await committed.write(sse_error(status, message))
            return committed
        return error_response(status, message)

    # -- bookkeeping --------------------------------------------------------------------

    def count_tokens(self, ctx: RequestContext, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        ctx.usage = usage
        name = ctx.name
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(p, int):
            self.metrics.bump(self.metrics.tokens_in, name, p)
        if isinstance(c, int):
            self.metrics.bump(self.metrics.tokens_out, name, c)

    def _refuse_access(
        self, request: web.Request, start: float, refusal: Refusal, client: str = ""
    ) -> web.Response:
        ctx = RequestContext(request, "", False, start, next(self.ids))
        ctx.client = client
        self.log_access(ctx, refusal.status, "")
        return _refusal(refusal)

    def _refuse(
        self,
        request: web.Request,
        start: float,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        ctx = RequestContext(request, "", False, start, next(self.ids))
        self.log_access(ctx, status, "")
        return error_response(status, message, param=param, code=code, headers=headers)

    def log_access(
        self,
        ctx: RequestContext,
        status: int,
        pod: str,
        usage: object = None,
        attempts: int | None = None,
    ) -> None:
        elapsed = self.clock() - ctx.start
        ctx.status = status
        if ctx.name:
            self.metrics.count_request(ctx.name, pod, status)
            self.metrics.latency.observe((ctx.name,), elapsed)
        if self.log_sink is None:
            return
        line: dict[str, object] = {
            "ts": round(time.time(), 3),
            "id": f"{self.id_prefix}-{ctx.id}",
            "method": ctx.request.method,
            "path": ctx.request.path,
            "model": ctx.name,
            "stream": ctx.stream,
            "status": status,
            "endpoint": pod,
            "ms": round(elapsed * 1000, 3),
        }
        if ctx.client:
            line["client"] = ctx.client
        if attempts is not None:
            line["attempts"] = attempts
        if isinstance(usage, dict):
            line["prompt_tokens"] = usage.get("prompt_tokens")
            line["completion_tokens"] = usage.get("completion_tokens")
        self.log_sink(dumps(line).decode() + "\n")


class RequestContext:
    """What one request carries through the proxy (no prompt text: it is never logged)."""

    __slots__ = (
        "client",
        "committed",
        "fallible",
        "id",
        "model",
        "name",
        "prefill_tokens",
        "request",
        "start",
        "status",
        "stream",
        "usage",
    )

    def __init__(self, request: web.Request, name: str, stream: bool, start: float, n: int) -> None:
        self.request = request
        self.name = name
        self.stream = stream
        self.start = start
        self.id = n
        self.model: ModelState | None = None
        self.committed: web.StreamResponse | None = None
        """A held stream whose headers already went out with a keep-alive."""
        self.status = 200
        """The answer's status, once known (what the access log says)."""
        self.fallible = False
        """Other backends follow: failures raise AttemptFailed instead of answering."""
        self.client = ""
        """The InferenceClient of the caller's key, if it sent a known one."""
        self.usage: dict[str, Any] | None = None
        """The response's token usage, once read."""
        self.prefill_tokens = 0
        """Prompt tokens this request adds to its endpoint's ``pending_prompt_tokens`` until
        its first token (or its answer) comes back; 0 once they are taken off."""


def _prefilled(ctx: RequestContext, endpoint: EndpointState) -> None:
    """Take the request's prompt off its endpoint's prefill queue (once: first token, or end)."""
    endpoint.pending_prompt_tokens -= ctx.prefill_tokens
    ctx.prefill_tokens = 0


def _refusal(refusal: Refusal) -> web.Response:
    return error_response(
        refusal.status,
        refusal.message,
        code=refusal.code,
        headers=refusal.headers,
        kind=refusal.kind,
    )


def shared_limiter(settings: RouterSettings, local: LocalLimiter) -> SharedLimiter:
    """The Redis-backed limiter of ``settings.redis_url`` (connects lazily, never raises here)."""
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = redis.asyncio.Redis.from_url(
        settings.redis_url or "",
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        # No retries inside the client: a failed call falls back to local limits at once, and
        # Redis is tried again after redis_retry_seconds. The asyncio client takes the asyncio
        # Retry (redis >= 8.2 warns about, then converts, the synchronous one).
        retry=Retry(NoBackoff(), 0),
    )
    return SharedLimiter(
        client,
        local,
        prefix=settings.redis_key_prefix,
        retry_seconds=settings.redis_retry_seconds,
        outage=settings.budgets_during_outage,
    )


def _problems(error: ValidationError) -> str:
    """The first few problems as ``path: message``, never the input (it may hold keys)."""
    problems = error.errors(include_url=False, include_input=False, include_context=False)[:5]
    return "; ".join(
        f"{'.'.join(str(x) for x in p['loc']) or 'body'}: {p['msg']}" for p in problems
    )


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def load_table_file(path: Path) -> RoutingTable:
    """The table stored in ``path`` (JSON or YAML; a ConfigMap key holds either).

    Raises:
        OSError: unreadable.
        ValueError: not a valid table (pydantic's ValidationError is a ValueError).
    """
    text = path.read_text()
    if text.lstrip().startswith("{"):
        return RoutingTable.model_validate_json(text)
    import yaml

    return RoutingTable.model_validate(yaml.safe_load(text))


def parse_engine_metrics(text: str, names: tuple[str, str]) -> tuple[int, float]:
    """(waiting requests, KV-cache use) summed over the series of an engine's ``/metrics``."""
    waiting_name, kv_name = names
    waiting = 0.0
    kv = 0.0
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        metric = line.split("{", 1)[0].split(" ", 1)[0]
        if metric == waiting_name:
            waiting += float(line.rsplit(" ", 1)[1])
        elif kv_name and metric == kv_name:
            kv = max(kv, float(line.rsplit(" ", 1)[1]))
    return int(waiting), kv


USAGE_TAIL_BYTES: Final = 4096
"""Bytes at the end of a stream that are searched for its usage event (an event is far
smaller; only ``[DONE]`` follows it)."""


def stream_usage(tail: bytes) -> dict[str, Any] | None:
    """The ``usage`` of the last SSE event that carries one, from the stream's tail bytes."""
    at = tail.rfind(b'"usage":{')
    if at < 0:
        at = tail.rfind(b'"usage": {')
    if at < 0:
        return None
    start = tail.rfind(b"data:", 0, at)
    end = tail.find(b"\n", at)
    if start < 0:
        return None
    try:
        doc = loads(tail[start + 5 : end if end >= 0 else len(tail)])
    except (ValueError, RecursionError):
        return None
    usage = doc.get("usage") if isinstance(doc, dict) else None
    return usage if isinstance(usage, dict) else None


def create_app(
    settings: RouterSettings,
    table: EndpointTable,
    upstream_session: aiohttp.ClientSession | None = None,
    *,
    admin_token: str | None = None,
    log_sink: Callable[[str], object] | None = None,
) -> web.Application:
    """The router as an aiohttp app.

    Args:
        settings: validated settings.
        table: the live table (already loaded from the table file, or empty).
        upstream_session: the client session to the engines; created at startup when absent.
        admin_token: the admin API's bearer token; the admin API refuses all without one.
        log_sink: where access-log lines go (``None``: no access log).
    """
    router = Router(settings, table, upstream_session, admin_token=admin_token, log_sink=log_sink)
    initial_credentials(router)
    app = web.Application(client_max_size=settings.max_request_bytes)
    app[ROUTER_KEY] = router
    app.on_startup.append(router.on_startup)
    app.on_shutdown.append(router.on_shutdown)
    app.on_cleanup.append(router.on_cleanup)
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        app.router.add_post(path, router.proxy)
    app.router.add_get("/v1/models", router.list_models)
    app.router.add_get("/healthz", router.healthz)
    app.router.add_get("/readyz", router.readyz)
    app.router.add_get("/metrics", router.metrics_endpoint)
    app.router.add_get("/admin/v1/routing-table", router.get_table)
    app.router.add_put("/admin/v1/routing-table", router.put_table)
    app.router.add_get("/admin/v1/credentials", router.get_credentials)
    app.router.add_put("/admin/v1/credentials", router.put_credentials)
    app.router.add_get("/admin/v1/held", router.get_held)
    app.router.add_get("/admin/v1/spend", router.get_spend)
    app.router.add_put("/admin/v1/spend", router.put_spend)
    app.router.add_route("*", "/{tail:.*}", router.not_found)
    return app


def read_admin_token(settings: RouterSettings) -> str | None:
    """The admin token: the file (a mounted Secret) wins over the setting."""
    if settings.admin_token_file:
        token = Path(settings.admin_token_file).read_text().strip()
        return token or None
    return settings.admin_token or None


def initial_credentials(router: Router) -> None:
    """Load the credentials file into ``router``, if there is a usable one."""
    if not router.settings.credentials_file:
        return
    path = Path(router.settings.credentials_file)
    try:
        router.apply_credentials(load_credentials_file(path), str(path))
    except OSError as error:
        log.warning("no usable credentials in %s: %s", path, error)
    except ValidationError as error:
        log.warning("no usable credentials in %s: %s", path, _problems(error))


def initial_table(settings: RouterSettings) -> EndpointTable:
    """An EndpointTable holding the table file's table, if there is a usable one."""
    table = EndpointTable()
    if settings.table_file:
        path = Path(settings.table_file)
        try:
            table.replace(load_table_file(path))
        except (OSError, ValueError) as error:
            log.warning("no usable routing table in %s: %s", path, error)
    return table


def stdout_sink(line: str) -> object:
    """Access-log lines to standard output (block-buffered when it is a pipe or file)."""
    return sys.stdout.write(line)


async def start(
    settings: RouterSettings,
    table: EndpointTable | None = None,
    *,
    admin_token: str | None = None,
    log_sink: Callable[[str], object] | None = None,
) -> tuple[web.AppRunner, int, Router]:
    """Start serving on ``settings.host``/``port``; returns the runner, bound port and router."""
    app = create_app(
        settings,
        table if table is not None else initial_table(settings),
        admin_token=admin_token,
        log_sink=log_sink,
    )
    # A client that goes away cancels its handler, which closes the upstream connection, so
    # the engine stops generating for nobody (serve_app turns handler cancellation on).
    runner, port = await serve_app(
        app,
        settings.host,
        settings.port,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        backlog=2048,
    )
    return runner, port, app[ROUTER_KEY]


async def serve(settings: RouterSettings, admin_token: str | None) -> None:
    """Serve until SIGTERM/SIGINT; then drain (``/readyz`` 503), stop, let requests finish."""
    sink = stdout_sink if settings.access_log else None
    runner, port, router = await start(settings, admin_token=admin_token, log_sink=sink)
    print(
        f"inferscale router on http://{settings.host}:{port}, table v{router.table.version}",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    flusher = asyncio.create_task(_flush_stdout(stop))
    try:
        await stop.wait()
        router.draining = True
        if settings.drain_seconds > 0:
            await asyncio.sleep(settings.drain_seconds)
    finally:
        await runner.cleanup()
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        sys.stdout.flush()


async def _flush_stdout(stop: asyncio.Event) -> None:
    # Access lines are written unflushed (one write per request is cheap; a flush is a syscall);
    # this puts them out at least once a second.
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        sys.stdout.flush()
