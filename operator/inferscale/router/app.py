"""The router's HTTP server: wires the request stages, the admin API and the loops to aiohttp.

``create_app(settings, table, upstream_session=...)`` returns an aiohttp application (aiohttp
server and aiohttp client: the pair that won ``bench/gateway``); ``serve(settings)`` runs one
until SIGTERM. All state lives on one :class:`~inferscale.router.state.RouterState` per app;
there are no module-level singletons. :class:`Router` builds the request pipeline once
(:class:`Pipeline`; each stage is a module of :mod:`inferscale.router.stages`), adds the
admin API (:mod:`.admin`) and runs the background loops (document files, engine scrapes).

Request path: authenticate, read and parse the body, authorize, select the model, admit, account,
(cache lookup), then hold while cold, pick an endpoint and forward, relaying the answer; or, for
a route with spillover, fallback, mirrors or providers, :mod:`.dispatch`. Anthropic's Messages
API (``POST /v1/messages``) takes the same path from its own parse stage on
(:mod:`.stages.parse_messages`); its answers are translated back at the edge
(:mod:`.messages_http`), refusals included, so a Messages client only ever sees Anthropic's
shapes.

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
import gc
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from inferscale.protocol.credentials import RouterCredentials
from inferscale.router import provider_keys
from inferscale.router.access import ANONYMOUS, Access, Refusal
from inferscale.router.access_log import AccessLog
from inferscale.router.admin import AdminApi
from inferscale.router.cache_redis import SharedCache
from inferscale.router.codec import JSON, dumps, error_response
from inferscale.router.context import RequestContext
from inferscale.router.difficulty import (
    DifficultyModel,
    DifficultyModelUnavailable,
    load_difficulty_model,
)
from inferscale.router.dispatch import Dispatcher
from inferscale.router.documents import (
    apply_credentials,
    initial_credentials,
    initial_table,
    reload_credentials,
    reload_table,
    watch_file,
)
from inferscale.router.kvsubscribe import KvEventSubscriber
from inferscale.router.kvsubscribe import metric_lines as kv_metric_lines
from inferscale.router.limits import LocalLimiter
from inferscale.router.limits_batched import BatchedLimiter
from inferscale.router.limits_redis import SharedLimiter
from inferscale.router.messages import (
    ANTHROPIC_VERSION,
    anthropic_model,
    model_list,
    openai_model,
)
from inferscale.router.messages_http import (
    MessagesDialect,
    messages_answer,
    messages_refusal,
    stream_answer,
)
from inferscale.router.metrics import CONTENT_TYPE, RouterMetrics, connection_metric_lines
from inferscale.router.scrape import scrape_engines
from inferscale.router.settings import RouterSettings
from inferscale.router.stages import ByRoute, Stage, link
from inferscale.router.stages.account import Account
from inferscale.router.stages.admit import Admit
from inferscale.router.stages.authenticate import Authenticate, client_key, refusal_response
from inferscale.router.stages.authorize import Authorize
from inferscale.router.stages.cache import CacheLookup, Encoder, load_static_encoder
from inferscale.router.stages.forward import Forward
from inferscale.router.stages.hold import Hold
from inferscale.router.stages.parse import Parse
from inferscale.router.stages.parse_messages import ParseMessages
from inferscale.router.stages.pick import PickEndpoint
from inferscale.router.stages.select_model import SelectModel
from inferscale.router.state import RouterState
from inferscale.router.table import EndpointTable
from inferscale.router.usage_ledger import open_ledger
from inferscale.serving import ConnectionCap, serve_app

log_router = logging.getLogger("inferscale.router")

ROUTER_KEY: Final[web.AppKey[Router]] = web.AppKey("inferscale_router")
OPENAI_PATHS: Final = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
"""The OpenAI requests the pipeline serves."""
MESSAGES_PATH: Final = "/v1/messages"
"""Anthropic's Messages API (translated to chat completions at the edge)."""


class Pipeline:
    """The request stages of one router, linked once."""

    def __init__(
        self,
        state: RouterState,
        difficulty: DifficultyModel | None = None,
        encoder_loader: Callable[[], Encoder] = load_static_encoder,
    ) -> None:
        """Build every stage over ``state`` and link them (see :mod:`inferscale.router.stages`).

        ``difficulty`` scores prompts for selecting routes (None: they serve their first
        candidate); ``encoder_loader`` builds the response cache's embedding model when a route
        needs it.
        """
        log, access = state.log, state.access
        self.cache = CacheLookup(state, encoder_loader)
        self.hold = Hold(state)
        forward = Forward(state)
        # A plain route: hold while cold, pick, forward. A route with backends: the dispatcher,
        # which uses the same chain for its own replicas and pick->forward for other models.
        replicas = link(self.hold, PickEndpoint(state), forward)
        self.dispatcher = Dispatcher(state, replicas, link(PickEndpoint(state), forward))
        by_route = ByRoute(replicas, self.dispatcher)
        body_timeout = state.settings.client_body_timeout_seconds
        # Every inbound API has its own parse stage and shares the stages after it: a Messages
        # request, once translated, meets the same access, limits, selection and accounting.
        checked_tail = link(
            Authorize(access, log),
            SelectModel(
                state.table, log, difficulty, state.clock, state.spend, state.wall, state.random
            ),
            Admit(access, log),
            Account(access),
            self.cache,
            by_route,
        )
        open_tail = link(
            SelectModel(
                state.table, log, difficulty, state.clock, state.spend, state.wall, state.random
            ),
            self.cache,
            by_route,
        )
        self.checked: Stage = link(
            Authenticate(access, log), Parse(body_timeout, log), checked_tail
        )
        """The chain while client keys are in use."""
        # Without client keys, authenticate, authorize, admit and account have nothing to do
        # (every caller is anonymous and unlimited): that chain leaves them out, so a router
        # without keys pays nothing for them.
        self.open: Stage = link(Parse(body_timeout, log), open_tail)
        """The chain while no client key is held or required."""
        self.messages_checked: Stage = link(
            Authenticate(access, log), ParseMessages(body_timeout, log), checked_tail
        )
        """Anthropic's Messages API while client keys are in use."""
        self.messages_open: Stage = link(ParseMessages(body_timeout, log), open_tail)
        """Anthropic's Messages API while no client key is held or required."""


class Router:
    """One router: its state, its pipeline, its admin API and its background loops."""

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
        encoder_loader: Callable[[], Encoder] = load_static_encoder,
    ) -> None:
        """Wire the collaborators; the session is created at startup when none is given.

        ``clock`` (monotonic) times requests; ``wall`` (epoch seconds) dates spend windows;
        ``encoder_loader`` builds the response cache's embedding model.
        """
        self.settings = settings
        self.table = table
        self.access = Access(
            LocalLimiter(clock, time.time), require_client_key=settings.require_client_key
        )
        id_prefix = f"{os.getpid():x}{int(time.time()) & 0xFFFFFF:x}"
        log = AccessLog(RouterMetrics(), log_sink, clock, id_prefix)
        self.state = state = RouterState(settings, table, self.access, log, clock=clock, wall=wall)
        state.session = session
        self.own_session = session is None
        self.random = state.random
        self.held = state.held
        try:
            difficulty: DifficultyModel | None = load_difficulty_model()
        except DifficultyModelUnavailable as error:
            # Selecting routes serve their first candidate; the operator shows why.
            difficulty, state.difficulty_error = None, str(error)
            log_router.warning("model selection without a difficulty model: %s", error)
        self.pipeline = Pipeline(state, difficulty, encoder_loader)
        self.admin = AdminApi(state, self.pipeline.dispatcher, admin_token)
        self.draining = False
        self.ids = itertools.count(1)
        self.tasks: list[asyncio.Task[None]] = []
        self.kv_subscriber: KvEventSubscriber | None = None
        """Started with the first endpoint that publishes KV events (none: no ZMQ at all)."""
        cap = settings.max_client_connections
        self.connections = ConnectionCap(cap) if cap else None
        """The cap on client connections (``None``: uncapped); its counts are metrics."""

    @property
    def admin_token(self) -> bytes | None:
        """The admin API's bearer token (``None``: the admin API refuses every call)."""
        return self.admin.token

    @admin_token.setter
    def admin_token(self, token: bytes | None) -> None:
        self.admin.token = token

    def apply_credentials(self, credentials: RouterCredentials, source: str) -> bool:
        """Install ``credentials`` (StaleCredentialsError when older), as a push would."""
        return apply_credentials(self.access, credentials, source)

    def provider_key(self, provider_id: str) -> str | None:
        """The API key of InferenceProvider ``<namespace>/<name>`` (``None``: none held)."""
        return self.access.provider_key(provider_id)

    # -- lifecycle ----------------------------------------------------------------------

    async def on_startup(self, _app: web.Application) -> None:
        """Create the upstream session; start the document-file and scrape loops."""
        state, settings = self.state, self.settings
        if state.session is None:
            state.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=settings.upstream_connections,
                    limit_per_host=0,
                    keepalive_timeout=60,
                    ttl_dns_cache=300,
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
                # One session serves every client: a cookie an engine or provider sets must not
                # ride along on the next client's request.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        if settings.redis_url:
            self.access.shared = shared_limiter(settings, self.access.local)
            # Two routers of one process (tests) share a log prefix: the origin adds a nonce.
            origin = f"{state.id_prefix}-{state.random.getrandbits(32):x}"
            self.pipeline.cache.shared = shared_cache(settings, origin)
        if settings.usage_ledger:
            state.ledger = ledger = open_ledger(settings)
            state.log.ledger = ledger.record
            self._spawn(ledger.run(state.stop))
        every = settings.table_poll_seconds
        if every > 0 and settings.table_file:
            load_table = lambda path: reload_table(self.table, path)  # noqa: E731
            self._spawn(watch_file(Path(settings.table_file), load_table, every, state.stop))
        if every > 0 and settings.credentials_file:
            load_keys = lambda path: reload_credentials(self.access, path)  # noqa: E731
            self._spawn(watch_file(Path(settings.credentials_file), load_keys, every, state.stop))
        if settings.scrape_interval_seconds > 0:
            self._spawn(scrape_engines(state))
        self.pipeline.cache.on_table(self.table)  # a table file loaded before the loop ran
        self.table.subscribe(self._sync_kv_events)
        self._sync_kv_events(self.table)

    def _sync_kv_events(self, table: EndpointTable) -> None:
        """One KV-events subscription per endpoint that publishes them, as the table says."""
        endpoints = list(table.endpoints())
        addresses = {e.key: f"tcp://{e.kv_events}" for e in endpoints if e.kv_events}
        if self.kv_subscriber is None:
            if not addresses or self.state.stop.is_set():
                return
            self.kv_subscriber = KvEventSubscriber(self.state.kv.index)
        self.kv_subscriber.sync(addresses)
        self.state.kv.keep((e.key for e in endpoints), table.models)

    def _spawn(self, loop: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.create_task(loop))

    async def on_shutdown(self, _app: web.Application) -> None:
        """Stop the loops; wake held requests so they answer now."""
        self.state.stop.set()
        self.pipeline.hold.wake_all()
        await self.pipeline.cache.stop()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.pipeline.dispatcher.stop_mirrors()
        if self.kv_subscriber is not None:
            await self.kv_subscriber.close()
            self.kv_subscriber = None

    async def on_cleanup(self, _app: web.Application) -> None:
        """Close the upstream session if it is ours, and the limits store."""
        if self.own_session and self.state.session is not None:
            await self.state.session.close()
        if self.access.shared is not None:
            await self.access.shared.close()
        if self.state.ledger is not None:
            await self.state.ledger.close()

    # -- handlers -----------------------------------------------------------------------

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``."""
        ctx = RequestContext(request, self.state.clock(), next(self.ids), ANONYMOUS)
        pipeline = self.pipeline
        resp = await (pipeline.checked if self.access.active else pipeline.open)(ctx)
        return ctx.name_selected(resp)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/messages``: Anthropic's Messages API, through the same stages.

        Every refusal and answer is Anthropic's (streams are translated as they are written).
        """
        ctx = RequestContext(request, self.state.clock(), next(self.ids), ANONYMOUS)
        pipeline = self.pipeline
        chain = pipeline.messages_checked if self.access.active else pipeline.messages_open
        resp = ctx.name_selected(await chain(ctx))
        dialect = ctx.dialect if isinstance(ctx.dialect, MessagesDialect) else None
        if ctx.stream and dialect is not None:
            return stream_answer(resp, dialect)
        return messages_answer(resp, dialect)

    async def healthz(self, _request: web.Request) -> web.StreamResponse:
        """Liveness: the process answers."""
        return web.Response(text="ok")

    async def readyz(self, _request: web.Request) -> web.StreamResponse:
        """Readiness: a table is loaded and we are not draining."""
        if self.draining:
            return web.Response(status=503, text="draining")
        if self.table.table is None:
            return web.Response(status=503, text="no routing table yet")
        degraded = "; ".join(
            d for d in (self.access.degraded(), self.pipeline.cache.degraded()) if d
        )
        # Still ready: a router whose limits went local must keep serving.
        return web.Response(text=f"ok (degraded: {degraded})" if degraded else "ok")

    def _connection_lines(self) -> list[str]:
        cap = self.connections
        return [] if cap is None else connection_metric_lines(cap.open, cap.limit, cap.refused)

    async def metrics_endpoint(self, _request: web.Request) -> web.StreamResponse:
        """Prometheus text format."""
        state = self.state
        # An adapter's name shares its base model's endpoints: their series are the base's.
        endpoints = [
            (name, e)
            for name, m in self.table.models.items()
            if m.base is None
            for e in m.endpoints
        ]
        in_flight = [(name, e.pod, e.in_flight) for name, e in endpoints]
        pending = [(name, e.pod, e.pending_prompt_tokens) for name, e in endpoints]
        held = [(n, state.held.get(n, 0)) for n, m in self.table.models.items() if m.base is None]
        now = state.wall()
        spend = [(r, *state.spend.mine(r, now)) for r in state.spend.routes()]
        text = state.metrics.render(
            in_flight,
            held,
            self.table.version,
            spend,
            extra=itertools.chain(
                self.access.metric_lines(),
                state.ledger.metric_lines() if state.ledger is not None else (),
                provider_keys.metric_lines(self.access.provider_pools, state.clock()),
                self.pipeline.cache.metric_lines(),
                kv_metric_lines(
                    self.kv_subscriber, ((e.key, e.pod) for e in self.table.endpoints())
                ),
                self._connection_lines(),
            ),
            pending_prompt_tokens=pending,
        )
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    def visible_models(self, request: web.Request) -> list[str] | Refusal:
        """Every model in the table the caller may use (with client keys: its key's models)."""
        names = sorted(self.table.models)
        if self.access.active:
            policy = self.access.identify(client_key(request))
            if isinstance(policy, Refusal):
                return policy
            names = self.access.visible(policy, names)
        return names

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/models``: every model in the table (at zero too: those are held, not 404).

        With client keys, only the models the caller's key may use. Anthropic's SDKs (they send
        ``anthropic-version``) get Anthropic's list shape.
        """
        names = self.visible_models(request)
        anthropic = ANTHROPIC_VERSION in request.headers
        if isinstance(names, Refusal):
            return messages_refusal(names) if anthropic else refusal_response(names)
        if anthropic:
            doc = model_list(names)
        else:
            doc = {"object": "list", "data": [openai_model(name) for name in names]}
        return web.Response(body=dumps(doc), headers={"Content-Type": JSON})

    async def get_model(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/models/{id}``: one model as ``/v1/models`` lists it, else 404.

        A model the caller's key may not use is 404 too (as if it did not exist).
        """
        name = request.match_info["id"]
        names = self.visible_models(request)
        anthropic = ANTHROPIC_VERSION in request.headers
        if isinstance(names, Refusal):
            return messages_refusal(names) if anthropic else refusal_response(names)
        if name not in names:
            resp = error_response(
                404, f"The model `{name}` does not exist.", param="model", code="model_not_found"
            )
            return messages_answer(resp, None) if anthropic else resp
        doc = anthropic_model(name) if anthropic else openai_model(name)
        return web.Response(body=dumps(doc), headers={"Content-Type": JSON})

    async def health(self, _request: web.Request) -> web.StreamResponse:
        """``GET /health`` as vLLM serves it: 200 with an empty body while the process answers.

        Load tools written for vLLM check it before they start (guidellm refuses a server
        without it: "Backend validation request failed"); it says what ``/healthz`` says.
        """
        return web.Response()

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        """Unknown path or method: an OpenAI error rather than aiohttp's text page."""
        return error_response(404, f"no route for {request.method} {request.path}")


def redis_client(settings: RouterSettings) -> Any:
    """A client of ``settings.redis_url`` (connects lazily, never raises here)."""
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return redis.asyncio.Redis.from_url(
        settings.redis_url or "",
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        # No retries inside the client: a failed call falls back to local limits at once, and
        # Redis is tried again after redis_retry_seconds. The asyncio client takes the asyncio
        # Retry (redis >= 8.2 warns about, then converts, the synchronous one).
        retry=Retry(NoBackoff(), 0),
    )


def shared_limiter(settings: RouterSettings, local: LocalLimiter) -> SharedLimiter | BatchedLimiter:
    """The Redis-backed limiter of ``settings.redis_url`` (connects lazily, never raises here).

    Batched (local counters synced every ``redis_sync_seconds``) when that is set.
    """
    client = redis_client(settings)
    if settings.redis_sync_seconds > 0:
        return BatchedLimiter(
            client,
            local,
            prefix=settings.redis_key_prefix,
            interval=settings.redis_sync_seconds,
            retry_seconds=settings.redis_retry_seconds,
            outage=settings.budgets_during_outage,
        )
    return SharedLimiter(
        client,
        local,
        prefix=settings.redis_key_prefix,
        retry_seconds=settings.redis_retry_seconds,
        outage=settings.budgets_during_outage,
    )


def shared_cache(settings: RouterSettings, origin: str) -> SharedCache:
    """The response cache's link to the other replicas through ``settings.redis_url``."""
    return SharedCache(
        redis_client(settings),
        prefix=settings.redis_key_prefix,
        origin=origin,
        retry_seconds=settings.redis_retry_seconds,
    )


def create_app(
    settings: RouterSettings,
    table: EndpointTable,
    upstream_session: aiohttp.ClientSession | None = None,
    *,
    admin_token: str | None = None,
    log_sink: Callable[[str], object] | None = None,
    encoder_loader: Callable[[], Encoder] = load_static_encoder,
) -> web.Application:
    """The router as an aiohttp app.

    Args:
        settings: validated settings.
        table: the live table (already loaded from the table file, or empty).
        upstream_session: the client session to the engines; created at startup when absent.
        admin_token: the admin API's bearer token; the admin API refuses all without one.
        log_sink: where access-log lines go (``None``: no access log).
        encoder_loader: builds the response cache's embedding model (when a route caches).
    """
    router = Router(
        settings,
        table,
        upstream_session,
        admin_token=admin_token,
        log_sink=log_sink,
        encoder_loader=encoder_loader,
    )
    initial_credentials(router.access, settings)
    app = web.Application(client_max_size=settings.max_request_bytes)
    app[ROUTER_KEY] = router
    app.on_startup.append(router.on_startup)
    app.on_shutdown.append(router.on_shutdown)
    app.on_cleanup.append(router.on_cleanup)
    for path in OPENAI_PATHS:
        app.router.add_post(path, router.proxy)
    app.router.add_post(MESSAGES_PATH, router.messages)
    app.router.add_get("/v1/models", router.list_models)
    app.router.add_get("/v1/models/{id:.+}", router.get_model)
    app.router.add_get("/health", router.health)
    app.router.add_get("/healthz", router.healthz)
    app.router.add_get("/readyz", router.readyz)
    app.router.add_get("/metrics", router.metrics_endpoint)
    router.admin.routes(app)
    app.router.add_route("*", "/{tail:.*}", router.not_found)
    return app


def stdout_sink(line: str) -> object:
    """Access-log lines to standard output (block-buffered when it is a pipe or file)."""
    return sys.stdout.write(line)


async def start(
    settings: RouterSettings,
    table: EndpointTable | None = None,
    *,
    admin_token: str | None = None,
    log_sink: Callable[[str], object] | None = None,
    encoder_loader: Callable[[], Encoder] = load_static_encoder,
) -> tuple[web.AppRunner, int, Router]:
    """Start serving on ``settings.host``/``port``; returns the runner, bound port and router."""
    app = create_app(
        settings,
        table if table is not None else initial_table(settings),
        admin_token=admin_token,
        log_sink=log_sink,
        encoder_loader=encoder_loader,
    )
    # A client that goes away cancels its handler, which closes the upstream connection, so
    # the engine stops generating for nobody (serve_app turns handler cancellation on).
    runner, port = await serve_app(
        app,
        settings.host,
        settings.port,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        backlog=2048,
        idle_connection_seconds=settings.idle_connection_seconds,
        connection_cap=app[ROUTER_KEY].connections,
    )
    return runner, port, app[ROUTER_KEY]


async def serve(settings: RouterSettings, admin_token: str | None) -> None:
    """Serve until SIGTERM/SIGINT; then drain (``/readyz`` 503), stop, let requests finish."""
    sink = stdout_sink if settings.access_log else None
    runner, port, router = await start(settings, admin_token=admin_token, log_sink=sink)
    # What start-up made (modules, settings, the app, the first table) lives about as long as
    # the process: moved out of the cycle collector's sight, its full collections walk what
    # requests allocate rather than some 80,000 objects (tens of ms each on a small core). A
    # start-up object in a reference cycle that later becomes garbage is never freed: a bounded,
    # one-time cost.
    gc.freeze()
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
