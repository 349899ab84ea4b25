"""Cache lookup: answer repeated and paraphrased questions from the route's response cache.

Only routes whose ``cache.enabled`` is set have a cache here; for every other route the stage
is one dict lookup and hands on. For a cached route, a request that may be cached (see
:func:`~inferscale.router.response_cache.eligible`) is looked up in the exact layer, then by
embedding similarity among the answers of its partition (same route, model, client key unless
the route shares, system prompt, earlier turns and parameters). A hit answers at once, as JSON
or replayed as a stream when the client streams; a miss goes on to the route, and its answer,
when it is a whole (non-streaming) completion, is kept for next time. ``Cache-Control:
no-cache`` skips the lookup (the fresh answer is kept), ``no-store`` skips the cache entirely.
Answers carry ``X-Inferscale-Cache: hit``, ``miss`` or ``bypass`` (not a stream already
relayed: its headers went out before the stage sees it).

A hit costs the caller no tokens (its charge settles at zero) but still counts as a request
against its rate, since admission comes first.

Failure behaviour: the embedding model loads in a thread when the first cached route appears.
Until it has loaded, and for good if it cannot load (the package or its weights missing or
corrupt), cached routes pass every request through unchanged, the reason is logged once and
``/readyz`` and ``inferscale_router_cache_disabled`` say so: the cache never fails a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol

from aiohttp import web

from inferscale.api.v1alpha1.inference_route import ResponseCache
from inferscale.embedding import EmbeddingUnavailable
from inferscale.protocol.defaults import CACHE_SIMILARITY_THRESHOLD
from inferscale.router.cache_redis import SharedCache
from inferscale.router.codec import JSON, dumps, loads
from inferscale.router.context import RequestContext
from inferscale.router.response_cache import (
    CachedAnswer,
    CacheQuery,
    CacheStore,
    StreamTap,
    Vector,
    answer_document,
    cache_query,
    decode_record,
    eligible,
    replay_chunks,
    stream_answer,
    usage_tokens,
)
from inferscale.router.sse import DONE, MalformedStream, SseDecoder, encode_data
from inferscale.router.stages import Stage
from inferscale.router.state import RouterState
from inferscale.router.table import EndpointTable

log = logging.getLogger("inferscale.router")

CACHE_HEADER: Final = "X-Inferscale-Cache"
CACHE_POD: Final = "cache"
"""The endpoint label of answers from the cache (access log, request metrics)."""
_SSE: Final = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    CACHE_HEADER: "hit",
}
MAX_STREAM_BYTES: Final = 4 * 1024 * 1024
"""Longest stream copied for the cache (a longer answer is relayed and not kept)."""
CHAT_PATH: Final = "/v1/chat/completions"
_NO_TOKENS: Final = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


class Encoder(Protocol):
    """What the cache needs of an embedding model (``inferscale.embedding``'s encoders)."""

    @property
    def dim(self) -> int:
        """Length of a vector."""
        ...

    @property
    def name(self) -> str:
        """The model's name (routers share vectors only between equal encoders)."""
        ...

    def encode_one(self, text: str) -> Vector:
        """``text``'s L2-normalised embedding."""
        ...


def load_static_encoder() -> Encoder:
    """The shipped fast encoder (imported here: a router without a cache never loads it)."""
    from inferscale.embedding.store import load_static_encoder as load

    encoder: Encoder = load()
    return encoder


class RouteCache:
    """One route's cache in this router: its settings and its store."""

    __slots__ = ("any_temperature", "settings", "shared", "store", "threshold", "ttl")

    def __init__(self, settings: ResponseCache, dim: int) -> None:
        """An empty cache under ``settings`` for vectors of ``dim`` floats."""
        self.settings = settings
        self.store = CacheStore(settings.max_entries, settings.max_bytes, dim)
        self.threshold = (
            settings.threshold if settings.threshold is not None else CACHE_SIMILARITY_THRESHOLD
        )
        self.ttl = float(settings.ttl_seconds)
        self.shared = settings.scope == "shared"
        self.any_temperature = settings.when == "always"

    @property
    def semantic(self) -> bool:
        """Whether the similarity layer runs (a threshold of 1 is the exact layer alone)."""
        return self.threshold < 1.0


class CacheLookup(Stage):
    """Answer from the route's cache, or hand on and keep the answer."""

    __slots__ = (
        "caches",
        "encoder",
        "failed",
        "loader",
        "loading",
        "shared",
        "sharing",
        "state",
        "tasks",
    )

    def __init__(
        self, state: RouterState, loader: Callable[[], Encoder] = load_static_encoder
    ) -> None:
        """Caches for ``state``'s table; ``loader`` builds the encoder (in a thread)."""
        self.state = state
        self.loader = loader
        self.encoder: Encoder | None = None
        self.failed: str | None = None
        """Why the cache is off (the encoder could not load); ``None`` otherwise."""
        self.loading: asyncio.Task[None] | None = None
        self.caches: dict[str, RouteCache] = {}
        """Served model name → its cache, for cached routes only (and once the encoder is in)."""
        self.shared: SharedCache | None = None
        """Redis between the router replicas (set at startup when the router has one)."""
        self.sharing = False
        """Whether the Redis subscription runs (it reads the routes cached when it starts)."""
        self.tasks: set[asyncio.Task[None]] = set()
        state.table.subscribe(self.on_table)

    # -- setup ----------------------------------------------------------------------------

    def wanted(self, table: EndpointTable) -> dict[str, ResponseCache]:
        """The cache settings of every route that enables one."""
        return {
            name: model.route.cache
            for name, model in table.models.items()
            if model.route.cache.enabled
        }

    def on_table(self, table: EndpointTable) -> None:
        """Keep the caches of unchanged routes; start or drop the others."""
        wanted = self.wanted(table)
        if wanted and self.encoder is None:
            self.start()
            return  # the caches are built when the encoder is in
        if self.encoder is None:
            self.caches = {}
            return
        dim = self.encoder.dim
        old = self.caches
        self.caches = {
            name: old[name] if name in old and old[name].settings == s else RouteCache(s, dim)
            for name, s in wanted.items()
        }
        new = [name for name, cache in self.caches.items() if old.get(name) is not cache]
        if new and self.shared is not None and self.sharing:
            self._spawn(self._load_shared(new))  # routes cached later read what is stored

    def start(self) -> None:
        """Load the encoder in a thread, once (nothing without a running loop yet)."""
        if self.loading is not None or self.failed is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # called again from the router's startup
        self.loading = loop.create_task(self._load())

    async def _load(self) -> None:
        try:
            self.encoder = await asyncio.to_thread(self.loader)
        # The loader's own error, and what a missing or damaged install raises before it can
        # say so: each turns the cache off, never the route.
        except (EmbeddingUnavailable, ImportError, OSError, ValueError, MemoryError) as error:
            self.failed = self.state.cache_off = f"{type(error).__name__}: {error}"[:300]
            log.warning("response cache off: the embedding model did not load (%s)", self.failed)
            return
        self.on_table(self.state.table)
        if self.shared is not None:
            self.sharing = True
            self._spawn(self.shared.run(lambda: list(self.caches), self.receive, self.state.stop))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _load_shared(self, routes: list[str]) -> None:
        assert self.shared is not None
        try:
            await self.shared.load(routes, self.receive)
        except self.shared.errors_caught as error:
            self.shared.record_failure(error)

    def receive(self, raw: bytes, ttl: float | None) -> None:
        """Put an answer another router kept into this router's index (its own: ignored)."""
        encoder, shared = self.encoder, self.shared
        if encoder is None or shared is None:
            return
        now = self.state.clock()
        record = decode_record(raw, encoder.name, encoder.dim, now)
        if record is None or record.origin == shared.origin:
            return
        cache = self.caches.get(record.route)
        if cache is None:
            return
        record.entry.expires = now + (cache.ttl if ttl is None else min(ttl, cache.ttl))
        cache.store.put(record.entry, now)

    async def stop(self) -> None:
        """Stop loading and sharing; close the Redis connection."""
        if self.loading is not None:
            self.loading.cancel()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2.0)
        if self.shared is not None:
            await self.shared.close()

    def degraded(self) -> str | None:
        """Why cached routes are not cached now, or ``None``."""
        return f"response cache off: {self.failed}" if self.failed else None

    # -- requests -------------------------------------------------------------------------

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        """A route without a cache hands on at once."""
        cache = self.caches.get(ctx.name)
        if cache is None:
            return await self.next(ctx)
        return await self._cached(ctx, cache)

    async def _cached(self, ctx: RequestContext, cache: RouteCache) -> web.StreamResponse:
        query = None
        # Only OpenAI's API: an answer kept or replayed is OpenAI JSON, and another dialect's
        # client (Anthropic Messages) would need it translated.
        if ctx.dialect is None and eligible(ctx.obj, cache.any_temperature):
            query = cache_query(
                ctx.path,
                ctx.obj,
                route=ctx.name,  # the served name is the route's: one route per name
                model=ctx.name,
                client=ctx.client,
                shared=cache.shared,
            )
        if query is None:
            return await self.next(ctx)
        control = ctx.request.headers.get("Cache-Control", "").lower()
        outcome, vector = "bypass", None
        if "no-cache" not in control and "no-store" not in control:
            now = self.state.clock()
            entry = cache.store.exact(query.exact, now)
            layer = "exact"
            if entry is None and cache.semantic and self.encoder is not None:
                vector = self.encoder.encode_one(query.question)
                found = cache.store.nearest(query.partition, vector, cache.threshold, now)
                entry, layer = (found[0], "semantic") if found is not None else (None, "")
            if entry is not None:
                return await self._hit(ctx, entry, layer)
            outcome = "miss"
        if ctx.stream:
            ctx.tap = StreamTap(min(cache.settings.max_bytes, MAX_STREAM_BYTES))
        resp = await self.next(ctx)
        self._count(ctx.name, outcome)
        if "no-store" not in control:
            self._keep(ctx, cache, query, vector, resp)
        if not resp.prepared:
            resp.headers[CACHE_HEADER] = outcome
        return resp

    def _count(self, name: str, outcome: str) -> None:
        counts = self.state.metrics.cache_requests
        key = (name, outcome)
        counts[key] = counts.get(key, 0) + 1

    async def _hit(
        self, ctx: RequestContext, entry: CachedAnswer, layer: str
    ) -> web.StreamResponse:
        """Answer with ``entry``: its JSON, or its chunks when the client streams."""
        name = ctx.name
        self._count(name, f"hit_{layer}")
        saved = self.state.metrics.cache_tokens_saved
        for kind, tokens in (
            ("prompt", entry.prompt_tokens),
            ("completion", entry.completion_tokens),
        ):
            saved[(name, kind)] = saved.get((name, kind), 0) + tokens
        if entry.cost:
            costs = self.state.metrics.cache_cost_saved
            costs[name] = costs.get(name, 0.0) + entry.cost
        ctx.usage = dict(_NO_TOKENS)  # settles the caller's charge at zero: nothing was generated
        self.state.log.write(ctx, 200, CACHE_POD, ctx.usage)
        if not ctx.stream:
            return web.Response(
                body=entry.body, headers={"Content-Type": JSON, CACHE_HEADER: "hit"}
            )
        doc = loads(entry.body)
        options = ctx.obj.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        resp = await ctx.open_stream(200, _SSE)
        events = b"".join(encode_data(dumps(c)) for c in replay_chunks(doc, include_usage))
        await resp.write(events + DONE)
        return resp

    def _keep(
        self,
        ctx: RequestContext,
        cache: RouteCache,
        query: CacheQuery,
        vector: Vector | None,
        resp: web.StreamResponse,
    ) -> None:
        """Store a whole, successful completion: a JSON answer, or a stream relayed in full."""
        found = _answer(ctx, resp)
        if found is None:
            return
        body, doc = found
        if vector is None and cache.semantic and self.encoder is not None:
            vector = self.encoder.encode_one(query.question)
        prompt, completion = usage_tokens(doc.get("usage"))
        now = self.state.clock()
        entry = CachedAnswer(
            query.exact,
            query.partition,
            query.question,
            vector,
            body,
            prompt,
            completion,
            now + cache.ttl,
            ctx.cost,
        )
        if cache.store.put(entry, now) and self.shared is not None and self.encoder is not None:
            self.shared.publish(ctx.name, entry, cache.ttl, self.encoder.name)

    def metric_lines(self) -> list[str]:
        """Gauges: answers and bytes held per route; whether the cache is off."""
        lines = [
            "# HELP inferscale_router_cache_entries Answers held in the response cache.",
            "# TYPE inferscale_router_cache_entries gauge",
        ]
        lines += [
            f'inferscale_router_cache_entries{{model="{n}"}} {len(c.store)}'
            for n, c in self.caches.items()
        ]
        lines += [
            "# HELP inferscale_router_cache_bytes Bytes held in the response cache.",
            "# TYPE inferscale_router_cache_bytes gauge",
        ]
        lines += [
            f'inferscale_router_cache_bytes{{model="{n}"}} {c.store.bytes}'
            for n, c in self.caches.items()
        ]
        lines += [
            "# HELP inferscale_router_cache_disabled 1 while the embedding model cannot load.",
            "# TYPE inferscale_router_cache_disabled gauge",
            f"inferscale_router_cache_disabled {int(self.failed is not None)}",
        ]
        if self.shared is not None:
            lines += self.shared.metric_lines()
        return lines


def _answer(ctx: RequestContext, resp: web.StreamResponse) -> tuple[bytes, dict[str, Any]] | None:
    """The answer to keep, as the JSON of a non-streaming completion, and that parsed."""
    if resp.status != 200:
        return None
    tap = ctx.tap
    if tap is not None and resp.prepared:  # a stream the forward stage copied
        if tap.chunks is None or ctx.status != 200:
            return None
        try:
            events = SseDecoder().feed(b"".join(tap.chunks))
        except MalformedStream:
            return None
        doc = stream_answer([e.data for e in events], ctx.path == CHAT_PATH)
        return (dumps(doc), doc) if doc is not None else None
    if not isinstance(resp, web.Response):
        return None
    body = resp.body
    if not isinstance(body, bytes) or not (resp.content_type or "").startswith(JSON):
        return None
    doc = answer_document(body, loads)
    return (body, doc) if doc is not None else None
