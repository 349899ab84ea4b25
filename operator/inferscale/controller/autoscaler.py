"""The autoscaler loop: read the load, ask the policy, set the replica count, say why.

Every ``autoscaler.intervalSeconds`` one round reads the engines' load for every model at once
(:class:`~inferscale.autoscaler.prometheus.PrometheusSource`) and the routers' held and
in-flight counts (``GET /admin/v1/held`` on each Ready router, the fast path that needs no
scrape), then runs the pure policy (:func:`inferscale.autoscaler.policy.decide`) for each
InferenceModel with ``spec.autoscaling.enabled``.

A decision that changes the count is actuated through the operator's own reconcile: the count
goes into :attr:`Runtime.autoscaled` and the model is reconciled, which writes the Deployment
and ``status.desiredReplicas``. Its reason is written to ``status.lastScaleReason`` and posted
as an Event (what to write and post is decided by the pure :mod:`inferscale.autoscaler.report`;
this loop locks, reads, patches and posts). A model whose load cannot be seen (Prometheus down,
stale or NaN metrics, a renamed metric, routers unreachable) keeps its count, and its
``ScalingActive`` condition says why: missing data means *hold*, never *scale to minimum*.

The policy's memory (its windows) lives here and in ``status.autoscalerState``, written at most
every ``statusIntervalSeconds`` (or with a scale), so an operator restart keeps its windows
without a status write per model per round.

The cost-aware mode's prices are gathered here and built by the pure
:func:`inferscale.autoscaler.spillprice.build_spill_pricing`: the InferenceRoutes and
InferenceProviders from kopf's indices (parsed again only when one of them changes), the
engines' token throughput from Prometheus (the last usable reading is kept per model, so a
quiet spell does not flip the mode off), and the operator-wide accelerator prices of the
settings for models that set none. Its verdict is the ``CostAware`` condition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, cast

import kopf
from pydantic import ValidationError

from inferscale.api.meta import GROUP, LABEL_MODEL, VERSION
from inferscale.api.v1alpha1.inference_model import KIND, InferenceModelSpec
from inferscale.api.v1alpha1.inference_provider import ProviderModel
from inferscale.autoscaler.floornews import FloorNews, floor_news
from inferscale.autoscaler.policy import Decision, History, PolicyParams, Sample, decide
from inferscale.autoscaler.prometheus import PrometheusRound, PrometheusSource
from inferscale.autoscaler.report import (
    CostCondition,
    ScalingNews,
    is_news,
    scaling_status,
    write_due,
)
from inferscale.autoscaler.signals import (
    ModelKey,
    RouterReading,
    build_sample,
    route_id,
    router_readings,
)
from inferscale.autoscaler.spillcost import SpillPrices
from inferscale.autoscaler.spillprice import (
    SpillRoute,
    Throughput,
    build_spill_pricing,
    provider_models,
    spill_routes,
)
from inferscale.config import AutoscalerSettings
from inferscale.controller.cache import count_pods, index_objects
from inferscale.controller.inference_model import (
    API_VERSION,
    Runtime,
    event_poster,
    now_rfc3339,
    schedule_reconcile,
)
from inferscale.controller.publishing import stop_task
from inferscale.controller.routing import MEMO_KEY as ROUTING_MEMO_KEY
from inferscale.controller.routing import RoutingState
from inferscale.errors import InferscaleError, NotFound
from inferscale.reconcile.deployment import desired_replicas

log = logging.getLogger(__name__)

MEMO_KEY: Final = "autoscaler"
"""Where the shared :class:`AutoscalerState` lives in kopf's operator-level memo."""

HELD_PATH: Final = "/admin/v1/held"


@dataclass
class _Memory:
    """What the loop keeps per model between rounds."""

    history: History
    status_written_at: float = 0.0
    """``time.monotonic()`` of the last status write (a scale, a condition, the resync)."""
    condition: tuple[object, ...] | None = None
    """The conditions' (status, reason) that the status is known to hold (ScalingNews.known)."""
    signals: tuple[object, ...] | None = None
    """(in flight, held, KV use, replicas) as last written."""
    spec_key: tuple[object, ...] = ()
    params: PolicyParams | None = None
    params_error: str | None = None
    throughput: Throughput | None = None
    """The engines' last usable token throughput (the cost-aware mode's spill price)."""


@dataclass
class _RoundInputs:
    prometheus: PrometheusRound | None
    routers: dict[str, RouterReading] | None
    router_error: str | None


SpillSources = Callable[[], tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]]
"""The InferenceRoutes and InferenceProviders, as kopf's indices hold them."""


_VERSION_KEYS: Final = ("namespace", "name", "creationTimestamp", "generation", "uid")


@dataclass
class _SpillIndex:
    """The routes and providers as the cost-aware mode reads them, and what they were built from."""

    versions: tuple[object, ...] = ()
    routes: dict[ModelKey, SpillRoute] = field(default_factory=dict)
    providers: dict[ModelKey, dict[str, ProviderModel] | None] = field(default_factory=dict)


class Autoscaler:
    """One loop for every model: read, decide, actuate, explain."""

    def __init__(
        self,
        runtime: Runtime,
        settings: AutoscalerSettings,
        models: Callable[[], list[Mapping[str, Any]]],
        *,
        prometheus: PrometheusSource | None,
        routers: Callable[[], RoutingState | None],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        spill_sources: SpillSources | None = None,
    ) -> None:
        self.runtime = runtime
        self.spill_sources = spill_sources
        self.spill = _SpillIndex()
        self.settings = settings
        self.book = settings.price_book()
        """The operator-wide accelerator prices (``autoscaler.acceleratorHourPrices``)."""
        self.models = models
        self.prometheus = prometheus
        self.routers = routers
        self.clock = clock
        self.monotonic = monotonic
        self.memory: dict[ModelKey, _Memory] = {}
        self.last_problem: str | None = None
        self.at_zero: set[str] = set()
        """Served names of the models at zero replicas after the last round."""
        self.specs: dict[ModelKey, tuple[tuple[object, object], InferenceModelSpec | None]] = {}
        """Parsed specs by model, with the (uid, generation) they were parsed at."""

    async def run(self) -> None:
        """Decide every interval until cancelled; a round's bug is logged, never fatal.

        Between rounds, while some model is at zero replicas, the routers are asked often
        whether one of those holds a request: if so the next round starts at once, so a cold
        start begins within a fraction of a second of the first request.
        """
        while True:
            started = self.monotonic()
            try:
                await self.round()
            except Exception:
                log.exception("autoscaler round failed; the next one tries again")
            while True:
                left = self.settings.interval_seconds - (self.monotonic() - started)
                if left <= 0:
                    break
                await asyncio.sleep(min(left, self.settings.from_zero_poll_seconds))
                if self.at_zero and await self._held_at_zero():
                    break

    async def _held_at_zero(self) -> bool:
        """Whether a router holds a request for a model that has no replica."""
        try:
            routers, _ = await self._read_routers()
        except Exception:
            log.exception("polling the routers for held requests failed")
            return False
        return bool(routers) and any(
            reading.held > 0
            for served, reading in (routers or {}).items()
            if served in self.at_zero
        )

    async def round(self) -> None:
        """Read every signal once, then decide every model."""
        models = self.models()
        inputs = await self._read()
        self._refresh_spill()
        now = self.clock()
        live: set[ModelKey] = set()
        self.at_zero = set()
        for body in models:
            meta = body.get("metadata") or {}
            key = (str(meta.get("namespace")), str(meta.get("name")))
            live.add(key)
            try:
                await self._one(key, body, inputs, now)
            except InferscaleError as error:
                log.warning("autoscaling %s/%s: %s", key[0], key[1], error)
        for gone in [k for k in self.memory if k not in live]:
            del self.memory[gone]
        for gone in [k for k in self.specs if k not in live]:
            del self.specs[gone]

    async def _read(self) -> _RoundInputs:
        prometheus_task = (
            asyncio.ensure_future(self.prometheus.read()) if self.prometheus is not None else None
        )
        routers, router_error = await self._read_routers()
        prometheus = await prometheus_task if prometheus_task is not None else None
        problem = (prometheus.error if prometheus else None) or router_error
        if prometheus is not None and prometheus.problems:
            log.debug("Prometheus series left out: %s", "; ".join(prometheus.problems[:5]))
        if problem != self.last_problem:
            if problem:
                log.warning("autoscaler cannot see the load, holding: %s", problem)
            else:
                log.info("autoscaler sees the load again")
            self.last_problem = problem
        return _RoundInputs(prometheus, routers, router_error)

    async def _read_routers(self) -> tuple[dict[str, RouterReading] | None, str | None]:
        state = self.routers()
        if state is None or state.publisher is None:
            return None, None
        docs, errors = await state.publisher.read_routers(
            HELD_PATH, self.settings.query_timeout_seconds
        )
        if not docs:
            return None, ("; ".join(errors[:3]) if errors else None)
        if errors:
            log.debug("some routers did not report held requests: %s", "; ".join(errors[:3]))
        return router_readings(docs), None

    def _spec(self, key: ModelKey, body: Mapping[str, Any]) -> InferenceModelSpec | None:
        """The parsed spec, parsed again only when its generation moves.

        A round reads every model: validating a thousand specs every two seconds would be most
        of its cost.
        """
        meta = body.get("metadata") or {}
        version = (meta.get("uid"), meta.get("generation"))
        cached = self.specs.get(key)
        if cached is not None and cached[0] == version and version != (None, None):
            return cached[1]
        try:
            spec: InferenceModelSpec | None = InferenceModelSpec.model_validate(
                body.get("spec") or {}
            )
        except ValidationError:
            spec = None
        self.specs[key] = (version, spec)
        return spec

    def _refresh_spill(self) -> None:
        """Parse the routes and providers again when one of them changed since the last round."""
        if self.spill_sources is None:
            return
        routes, providers = self.spill_sources()
        # The indices keep name, namespace, creationTimestamp and generation (not every one
        # keeps the uid): a spec change moves the generation, a re-creation the timestamp.
        versions = tuple(
            sorted(
                tuple(str(m.get(k)) for k in _VERSION_KEYS)
                for m in ((b.get("metadata") or {}) for b in [*routes, *providers])
            )
        ) + (len(routes),)
        if versions != self.spill.versions:
            self.spill = _SpillIndex(versions, spill_routes(routes), provider_models(providers))

    def _pricing(
        self, key: ModelKey, spec: InferenceModelSpec, memory: _Memory, inputs: _RoundInputs
    ) -> tuple[SpillPrices | None, CostCondition]:
        """The model's spill prices and its CostAware condition, from what this round holds."""
        seen = inputs.prometheus.throughput.get(key) if inputs.prometheus is not None else None
        if seen is not None and seen.usable():
            memory.throughput = seen
        pricing = build_spill_pricing(
            key[0],
            spec,
            self.spill.routes.get(key),
            self.spill.providers,
            memory.throughput,
            self.book,
        )
        return pricing.prices, pricing.condition()

    def _params(
        self,
        memory: _Memory,
        key: ModelKey,
        spec: InferenceModelSpec,
        ttr: float | None,
        spill: SpillPrices | None,
    ) -> None:
        """Rebuild the policy's params when the spec, the start-up time or the prices move.

        Prices count to three significant figures: the throughput wanders every read.
        """
        spec_key = (self.specs[key][0], None if ttr is None else round(ttr), _rounded(spill))
        if spec_key == memory.spec_key:
            return
        memory.spec_key = spec_key
        try:
            params = PolicyParams.from_spec(spec, ttr, spill)
            # The operator's staleness setting (autoscaler.staleAfterSeconds) into the policy.
            memory.params = replace(params, stale_after_s=self.settings.stale_after_seconds)
            memory.params_error = None
        except ValueError as error:
            memory.params, memory.params_error = None, str(error)

    async def _one(
        self, key: ModelKey, body: Mapping[str, Any], inputs: _RoundInputs, now: float
    ) -> None:
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return
        spec = self._spec(key, body)
        if spec is None:
            return  # the reconcile reports an invalid spec
        if not spec.autoscaling.enabled:
            self.memory.pop(key, None)
            self.runtime.autoscaled.pop(key, None)
            return
        status = _StatusView(body.get("status"))
        memory = self.memory.get(key)
        if memory is None:
            memory = _Memory(history=_restore(status.text("autoscalerState")))
            self.memory[key] = memory
        spill, cost = self._pricing(key, spec, memory, inputs)
        self._params(memory, key, spec, status.number("timeToReadySeconds"), spill)
        current = self.runtime.autoscaled.get(key)
        if current is None:
            desired = status.number("desiredReplicas")
            current = desired_replicas(spec, int(desired) if desired is not None else None)
        if memory.params is None:
            why = f"invalid autoscaling settings: {memory.params_error}"
            await self._write(key, memory, ScalingNews(current, None, None, why, cost=cost))
            return

        if self.runtime.cache is not None:
            ready, starting = self.runtime.cache.pod_counts(*key)
        else:
            pods = await self.runtime.api.list("v1", "Pod", key[0], f"{LABEL_MODEL}={key[1]}")
            ready, starting = count_pods(pods)
        served = status.text("servedName") or spec.served_name or key[1]
        prometheus = inputs.prometheus
        reading = prometheus.readings.get(key) if prometheus is not None else None
        router = inputs.routers.get(served, RouterReading(0, 0)) if inputs.routers else None
        sample, unknown = build_sample(
            engine=spec.engine,
            now=now,
            ready=ready,
            starting=starting,
            prometheus_configured=self.prometheus is not None,
            prometheus=reading,
            prometheus_error=prometheus.error if prometheus is not None else None,
            router=router,
            router_error=inputs.router_error,
            stale_after=self.settings.stale_after_seconds,
            spilled_tokens=(
                (None, None) if prometheus is None else prometheus.spilled_token_share(key, served)
            ),
            spend_capped=self._spend_capped(key, prometheus),
        )
        decision = decide(memory.params, memory.history, sample, now, current)
        memory.history = decision.history
        if decision.replicas == 0:
            self.at_zero.add(served)
        a = spec.autoscaling
        floor = floor_news(
            memory.params, decision, now, a.preset, a.learned_floor_percentile is not None
        )
        if decision.replicas != current:
            await self._scale(key, memory, decision, sample, cost, floor)
            return
        news = ScalingNews(current, decision, sample, unknown, cost=cost, floor=floor)
        await self._write(key, memory, news)

    def _spend_capped(self, key: ModelKey, prometheus: PrometheusRound | None) -> float | None:
        """The requests the model's spill route's spend cap kept from spilling, per second.

        The routers label them by route (``namespace/name``); the spill route is the one the
        prices come from (:func:`~inferscale.autoscaler.spillprice.spill_routes`). None:
        unknown (no Prometheus, no spill route, the read failed).
        """
        route = self.spill.routes.get(key)
        if prometheus is None or route is None:
            return None
        return prometheus.spend_capped_rate(route_id(key[0], route.route))

    async def _scale(
        self,
        key: ModelKey,
        memory: _Memory,
        decision: Decision,
        sample: Sample,
        cost: CostCondition,
        floor: FloorNews | None,
    ) -> None:
        namespace, name = key
        self.runtime.autoscaled[key] = decision.replicas
        log.info("%s/%s: %s", namespace, name, decision.reason)
        news = ScalingNews(
            decision.replicas, decision, sample, None, scaled=True, cost=cost, floor=floor
        )
        await self._write(key, memory, news)
        # At once, not after the child-event coalescing: a cold start is waiting on it.
        schedule_reconcile(self.runtime, namespace, name, log, delay=0)

    async def _write(self, key: ModelKey, memory: _Memory, news: ScalingNews) -> None:
        """Patch the autoscaler's part of the status and post its Event, when either is news."""
        namespace, name = key
        since = self.monotonic() - memory.status_written_at
        due = write_due(news, memory.signals, since, self.settings.status_interval_seconds)
        if not is_news(news, memory.condition, due):
            return  # nothing new: no lock, no read (a round passes every model)
        async with self.runtime.lock(namespace, name):
            fresh = await self._fresh(key)
            if fresh is None:
                return
            update = scaling_status(
                news, fresh, history=memory.history.to_json(), now=now_rfc3339(), due=due
            )
            if update.patch is None:
                memory.condition = news.known()
                return
            try:
                stored = await self.runtime.api.patch_status(
                    API_VERSION, KIND, namespace, name, update.patch
                )
            except NotFound:
                return
            if self.runtime.cache is not None:
                self.runtime.cache.applied(stored)
            memory.status_written_at = self.monotonic()
            memory.condition = news.known()
            memory.signals = news.signals()
            post = event_poster(kopf.Body(cast(kopf.RawBody, fresh)))
            for event in (update.event, update.cost_event, update.floor_event):
                if event is not None:
                    post(*event)

    async def _fresh(self, key: ModelKey) -> dict[str, Any] | None:
        if self.runtime.cache is not None:
            return self.runtime.cache.model(*key)
        try:
            return await self.runtime.api.get(API_VERSION, KIND, *key)
        except NotFound:
            return None


class _StatusView:
    """The few status fields a round reads, without validating the whole status each time.

    A field of the wrong type reads as missing (a foreign or older writer must not stop the
    autoscaler); the status is validated in full only when the autoscaler writes it.
    """

    def __init__(self, raw: object) -> None:
        self.raw: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}

    def text(self, name: str) -> str | None:
        value = self.raw.get(name)
        return value if isinstance(value, str) and value else None

    def number(self, name: str) -> float | None:
        value = self.raw.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) if value >= 0 else None


def _rounded(spill: SpillPrices | None) -> tuple[object, ...] | None:
    if spill is None:
        return None
    return tuple(
        None if v is None else float(f"{v:.3g}")
        for v in (spill.replica_hour_price, spill.spill_price_per_replica_hour)
    ) + (spill.spend_cap_per_hour,)


def _restore(text: str | None) -> History:
    """The windows kept in the status, or fresh ones when there are none or they are garbled."""
    if not text:
        return History()
    try:
        return History.from_json(text)
    except ValueError:
        log.warning("status.autoscalerState does not parse; starting with empty windows")
        return History()


# -- kopf glue ---------------------------------------------------------------------------


@dataclass
class AutoscalerState:
    """Shared through kopf's memo: the loop and its task."""

    autoscaler: Autoscaler | None = None
    task: asyncio.Task[None] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _start(memo: Any, indices: Mapping[str, Any]) -> None:
    state = memo.get(MEMO_KEY)
    runtime = memo.get("runtime")
    if not isinstance(state, AutoscalerState) or not isinstance(runtime, Runtime):
        return
    if state.autoscaler is not None or "models" not in indices:
        return
    settings = runtime.settings.autoscaler
    if not settings.enabled:
        return
    models_index = indices["models"]
    routes_index = indices.get("inference_routes", {})
    providers_index = indices.get("inference_providers", {})

    def models() -> list[Mapping[str, Any]]:
        return index_objects(models_index)

    def spill_sources() -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        return index_objects(routes_index), index_objects(providers_index)

    def routers() -> RoutingState | None:
        routing = memo.get(ROUTING_MEMO_KEY)
        return routing if isinstance(routing, RoutingState) else None

    prometheus = (
        PrometheusSource(
            settings.prometheus_url,
            timeout=settings.query_timeout_seconds,
            model_label=settings.model_label,
            namespace_label=settings.namespace_label,
        )
        if settings.prometheus_url
        else None
    )
    state.autoscaler = Autoscaler(
        runtime,
        settings,
        models,
        prometheus=prometheus,
        routers=routers,
        spill_sources=spill_sources,
    )
    state.task = asyncio.get_running_loop().create_task(state.autoscaler.run(), name="autoscaler")
    where = settings.prometheus_url or "the routers only (no Prometheus URL set)"
    log.info("autoscaler started: every %gs from %s", settings.interval_seconds, where)


@kopf.on.startup()
async def autoscaler_startup(memo: Any, **_: Any) -> None:
    """Make the shared state; the loop starts with the first model event (indices complete)."""
    if not isinstance(memo.get(MEMO_KEY), AutoscalerState):
        memo[MEMO_KEY] = AutoscalerState()


@kopf.on.cleanup()
async def autoscaler_cleanup(memo: Any, **_: Any) -> None:
    """Stop the loop."""
    state = memo.get(MEMO_KEY)
    if not isinstance(state, AutoscalerState):
        return
    await stop_task(state.task)
    if state.autoscaler is not None and state.autoscaler.prometheus is not None:
        state.autoscaler.prometheus.close()


@kopf.on.event(GROUP, VERSION, "inferencemodels")
async def autoscaler_model_event(memo: Any, **kwargs: Any) -> None:
    """Start the loop once kopf's indices are there (it reads models from them)."""
    _start(memo, kwargs)
