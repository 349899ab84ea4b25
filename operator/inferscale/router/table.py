"""The routing table: the versioned document the operator pushes, and the router's live copy.

:class:`RoutingTable` is the wire schema (camelCase JSON, like the API): served model name →
route settings (named as in InferenceRoute), endpoints (pod, ``host:port``, ready, engine,
weight) and the route's other backends (hosted provider models and other served models, each
with its role: primary, spillover, fallback or mirror); and the hosted providers by
``<namespace>/<name>`` (type, base URL, timeout, models with their provider-side names and
prices, never an API key: keys travel in the credentials channel). The operator compiles it
with a pure function, PUTs it to every router pod and keeps the last one in a ConfigMap that a
starting router reads.

:class:`EndpointTable` is the in-memory copy the server picks from. It swaps a new version in
at once (one assignment, so a request sees either the old table or the new one) and refuses a
version older than the one it holds. Per-endpoint runtime state (in-flight count, circuit
breaker, scraped engine load) lives on :class:`EndpointState` and survives a swap for every
endpoint that stays, so a push never resets the counts the pickers balance on.

Pure: no I/O, no clock (callers pass ``now``), no asyncio.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Final

from pydantic import Field, model_validator

from inferscale.api.meta import ApiModel, nested
from inferscale.api.v1alpha1.inference_model import SERVED_NAME_PATTERN
from inferscale.api.v1alpha1.inference_provider import ProviderType
from inferscale.api.v1alpha1.inference_route import (
    HoldQueue,
    PrefixHash,
    Retries,
    Role,
    SpendCaps,
    Strategy,
    Timeouts,
)
from inferscale.errors import InferscaleError
from inferscale.router.picking import HashRing

ADDRESS_PATTERN: Final = r"^[A-Za-z0-9.\-]{1,253}:[0-9]{1,5}$"
"""``host:port`` of an engine pod (an IPv4 address or a DNS name; no scheme, no path)."""

_SERVED_NAME: Final = re.compile(SERVED_NAME_PATTERN)


class StaleTableError(InferscaleError):
    """A pushed table is older than (or conflicts with) the one the router holds."""


class TableEndpoint(ApiModel):
    """One engine pod that serves a model."""

    pod: str = Field(min_length=1, max_length=253)
    """Pod name (a label on metrics and access logs)."""

    address: str = Field(pattern=ADDRESS_PATTERN)
    """``host:port`` the router sends requests to."""

    ready: bool = True
    """Whether the pod is Ready; endpoints that are not ready are kept but never picked."""

    engine: str = Field(default="vllm", max_length=32)
    """Engine kind (``vllm``, ``sglang``, ``tgi``, ``trtllm``, ``sim``): which metric names the
    router scrapes for queue and KV-cache use."""

    weight: int = Field(default=1, ge=0, le=1_000_000)
    """Share of traffic under the weighted strategy."""


class TableProviderModel(ApiModel):
    """A provider's model as routes name it: its name at the provider and its prices."""

    provider_model: str = Field(min_length=1, max_length=256)
    """The provider's own model name (sent as ``model``)."""

    input_price_per_million_tokens: float = Field(default=0, ge=0)
    """Price of a million prompt tokens."""

    output_price_per_million_tokens: float = Field(default=0, ge=0)
    """Price of a million generated tokens."""


class TableProvider(ApiModel):
    """A hosted provider (an InferenceProvider), without its key."""

    type: ProviderType
    """openai, anthropic or openai-compatible."""

    base_url: str = Field(alias="baseURL", pattern=r"^https?://[^\s]+$", max_length=2048)
    """Base URL of the API (the official one already filled in for openai and anthropic)."""

    timeout_seconds: float = Field(default=60, gt=0, le=3600)
    """Longest wait for a whole response."""

    anthropic_version: str = Field(default="2023-06-01", max_length=32)
    """``anthropic-version`` header (type anthropic)."""

    models: dict[str, TableProviderModel] = Field(min_length=1, max_length=256)
    """Model name as routes use it -> its provider-side name and prices."""


class TableBackend(ApiModel):
    """A backend of a route other than its own replicas: a provider model or another model."""

    role: Role
    """primary, spillover, fallback or mirror."""

    provider: str | None = Field(default=None, max_length=507)
    """``<namespace>/<name>`` of a provider in :attr:`RoutingTable.providers`; empty for a
    served model of this table."""

    model: str = Field(pattern=SERVED_NAME_PATTERN)
    """The provider's model (a key of its ``models``) or a served model name of this table."""

    weight: int = Field(default=1, ge=0, le=1_000_000)
    """Share of traffic among the primaries (primary backends)."""

    mirror_percent: float | None = Field(default=None, ge=0, le=100)
    """Percentage of requests copied (mirror backends; default 100)."""

    @model_validator(mode="after")
    def _mirror_percent_on_mirrors(self) -> TableBackend:
        if self.role != "mirror" and self.mirror_percent is not None:
            raise ValueError("mirrorPercent is only allowed on a mirror backend")
        return self

    @property
    def label(self) -> str:
        """How metrics and logs name it: ``provider:<ns>/<name>/<model>`` or ``model:<name>``."""
        if self.provider is not None:
            return f"provider:{self.provider}/{self.model}"
        return f"model:{self.model}"


class SpilloverSettings(ApiModel):
    """When a route's spillover backends take requests (the compiler fills in the threshold)."""

    in_flight_per_replica: int = Field(default=16, ge=1, le=100_000)
    """A ready replica is saturated at this many of this router's requests in flight."""

    prompt_tokens_per_replica: int | None = Field(default=None, ge=1, le=100_000_000)
    """A ready replica is also saturated when the prompt tokens of this router's requests
    there that have no first token yet, plus the new request's, exceed this (None: off)."""

    on_cold_start: bool = True
    """Spill over at once while no replica is ready, rather than holding the request."""


class RouteSettings(ApiModel):
    """How requests for one model are routed; names as in InferenceRoute's spec."""

    strategy: Strategy = "leastInFlight"
    """How an endpoint is picked among the ready ones."""

    prefix_hash: PrefixHash = nested(PrefixHash)
    """Settings of the prefixHash strategy."""

    retries: Retries = nested(Retries)
    """Retries before the first byte."""

    timeouts: Timeouts = nested(Timeouts)
    """Time limits."""

    hold_queue: HoldQueue = nested(HoldQueue)
    """The cold-start hold queue."""

    spillover: SpilloverSettings = nested(SpilloverSettings)
    """When spillover backends are used."""

    spend: SpendCaps = nested(SpendCaps)
    """Spend caps on the route's hosted providers."""


class ModelRoute(ApiModel):
    """A served model: its route settings, its endpoints and its other backends."""

    route: RouteSettings = nested(RouteSettings)
    """Route settings."""

    endpoints: list[TableEndpoint] = Field(default_factory=list, max_length=10_000)
    """Every pod of the model, ready or not; an empty list means the model is at zero and its
    requests are held."""

    route_id: str | None = Field(default=None, max_length=507)
    """``<namespace>/<name>`` of the InferenceRoute the settings and backends come from: the
    key of the route's spend and status."""

    weight: int = Field(default=1, ge=0, le=1_000_000)
    """The endpoints' share of traffic among the route's primaries (when it has provider
    primaries too)."""

    backends: list[TableBackend] = Field(default_factory=list, max_length=32)
    """Provider models and other served models, by role; empty for a plain model."""

    serves_locally: bool = True
    """Whether the endpoints are primaries at all: false for a route whose primaries are all
    hosted (its requests never wait for replicas)."""


class RoutingTable(ApiModel):
    """The whole routing table of a router, as the operator pushes it."""

    version: int = Field(ge=0)
    """Monotonic version; a router refuses a table older than the one it holds."""

    models: dict[str, ModelRoute] = Field(default_factory=dict, max_length=100_000)
    """Served model name (what clients send as ``model``) → its route."""

    providers: dict[str, TableProvider] = Field(default_factory=dict, max_length=10_000)
    """Hosted providers by ``<namespace>/<name>``, for the models' backends."""

    @model_validator(mode="after")
    def _served_names(self) -> RoutingTable:
        # Dict keys get no pattern from the field declaration.
        bad = [name for name in self.models if not _SERVED_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"invalid served model names: {bad[:5]}")
        return self

    @model_validator(mode="after")
    def _backends_resolve(self) -> RoutingTable:
        # Every backend names something this table holds, so a router never meets a dangling
        # reference mid-request.
        for name, model in self.models.items():
            for backend in model.backends:
                if backend.provider is None:
                    if backend.model not in self.models or backend.model == name:
                        raise ValueError(
                            f"model {name!r}: backend model {backend.model!r} is not another "
                            "model of the table"
                        )
                    continue
                provider = self.providers.get(backend.provider)
                if provider is None or backend.model not in provider.models:
                    raise ValueError(
                        f"model {name!r}: backend {backend.label} is not in the table's providers"
                    )
        return self


class CircuitBreaker:
    """Consecutive failures eject a backend for a while; then one request at a time probes it.

    ``threshold`` failures in a row open the breaker for ``base_s``, doubling with each ejection
    in a row up to ``max_s``; once that runs out, one request at a time goes through (half
    open), and the first that works closes the breaker. Replicas' endpoints and hosted
    providers share it. Slotted: the hot path reads ``ejected_until`` and ``in_flight``.
    """

    __slots__ = ("ejected_until", "ejections", "failures", "in_flight")

    def __init__(self) -> None:
        """Closed, nothing in flight."""
        self.in_flight = 0
        """Requests at the backend now (a half-open breaker lets one through)."""
        self.failures = 0
        """Consecutive failures (connect errors, retryable statuses, broken responses)."""
        self.ejections = 0
        """Consecutive ejections; the ejection time doubles with each."""
        self.ejected_until = 0.0
        """Monotonic time the ejection ends; 0 when the breaker is closed."""

    def available(self, now: float) -> bool:
        """Whether the breaker lets a request through now.

        Closed: yes. Open (ejected): no. Half-open (the ejection ran out): one request at a
        time, whose result closes or reopens the breaker.
        """
        until = self.ejected_until
        if until == 0.0:
            return True
        if now < until:
            return False
        return self.in_flight == 0

    def record_success(self) -> None:
        """Close the breaker."""
        self.failures = 0
        self.ejections = 0
        self.ejected_until = 0.0

    def record_failure(self, now: float, threshold: int, base_s: float, max_s: float) -> bool:
        """Count a failure; eject after ``threshold`` in a row. True when this ejected it."""
        self.failures += 1
        if self.failures < threshold and self.ejected_until == 0.0:
            return False
        # Each ejection in a row doubles the wait, so a dead backend costs one probe per max_s.
        self.ejected_until = now + min(max_s, base_s * float(2 ** min(self.ejections, 16)))
        self.ejections += 1
        return True


class EndpointState(CircuitBreaker):
    """One endpoint's live state: what pickers read and what the proxy updates.

    A plain slotted class, not a pydantic model: the hot path touches it several times per
    request.
    """

    __slots__ = (
        "address",
        "base_url",
        "engine",
        "kv_usage",
        "pending_prompt_tokens",
        "pod",
        "queued",
        "ready",
        "weight",
    )

    def __init__(self, spec: TableEndpoint) -> None:
        """Fresh state for ``spec``: nothing in flight, breaker closed."""
        super().__init__()
        self.address = spec.address
        self.base_url = f"http://{spec.address}"
        self.pod = spec.pod
        self.engine = spec.engine
        self.weight = spec.weight
        self.ready = spec.ready
        self.queued = 0
        """Requests waiting in the engine, from its last scrape (0 when unknown or stale)."""
        self.kv_usage = 0.0
        """KV-cache use 0..1, from the engine's last scrape."""
        self.pending_prompt_tokens = 0
        """Estimated prompt tokens of this router's requests here with no first token yet."""

    @property
    def key(self) -> str:
        """Stable identity for hashing: the address."""
        return self.address

    def update(self, spec: TableEndpoint) -> None:
        """Take the table's new view of this endpoint, keeping the runtime counters."""
        self.pod = spec.pod
        self.engine = spec.engine
        self.weight = spec.weight
        self.ready = spec.ready


class RouteRoles:
    """A model's backends other than its own endpoints, sorted by role (compiled per table)."""

    __slots__ = (
        "fallback",
        "local_weight",
        "mirror",
        "primaries",
        "route_id",
        "serves_locally",
        "spillover",
    )

    def __init__(self, entry: ModelRoute) -> None:
        """Sort ``entry``'s backends by role, keeping their order."""
        self.route_id = entry.route_id or ""
        self.serves_locally = entry.serves_locally
        self.local_weight = entry.weight if entry.serves_locally else 0
        by_role: dict[str, list[TableBackend]] = {}
        for backend in entry.backends:
            by_role.setdefault(backend.role, []).append(backend)
        self.primaries = [b for b in by_role.get("primary", []) if b.weight > 0]
        self.spillover = by_role.get("spillover", [])
        self.fallback = by_role.get("fallback", [])
        self.mirror = by_role.get("mirror", [])


class ModelState:
    """A served model's compiled route: its settings and the endpoints that may be picked."""

    __slots__ = ("counter", "endpoints", "name", "ready", "ring", "roles", "route")

    def __init__(
        self,
        name: str,
        route: RouteSettings,
        endpoints: list[EndpointState],
        roles: RouteRoles | None = None,
    ) -> None:
        """Compile; ``ready`` holds the endpoints whose pods are Ready (pickers choose here)."""
        self.name = name
        self.route = route
        self.endpoints = endpoints
        self.roles = roles
        """Provider and other-model backends; None for a plain model (the fast path)."""
        weighted = route.strategy == "weighted"
        self.ready = [e for e in endpoints if e.ready and (e.weight > 0 or not weighted)]
        self.counter = 0
        """Requests picked so far (round robin; rotation among equals)."""
        self.ring: HashRing | None = None
        """The prefixHash ring over the ready endpoints, built once per table."""
        if route.strategy == "prefixHash":
            self.ring = HashRing(
                [e.key for e in self.ready], route.prefix_hash.replicas_per_endpoint
            )

    def candidates(self, now: float) -> list[EndpointState]:
        """Ready endpoints whose breaker lets a request through now."""
        ready = self.ready
        for e in ready:
            if e.ejected_until != 0.0:
                break
        else:
            return ready  # the common case: nothing ejected, no copy
        return [e for e in ready if e.available(now)]


class EndpointTable:
    """The live routing table: swapped atomically, never rolled back to an older version."""

    def __init__(self) -> None:
        """An empty table (version -1: any pushed table is newer)."""
        self.table: RoutingTable | None = None
        self.version = -1
        self.models: dict[str, ModelState] = {}
        self.providers: dict[str, TableProvider] = {}
        """Hosted providers by ``<namespace>/<name>``, as the table held names them."""
        self._states: dict[str, EndpointState] = {}
        self._listeners: list[Callable[[EndpointTable], None]] = []

    def subscribe(self, listener: Callable[[EndpointTable], None]) -> None:
        """Call ``listener(self)`` after every swap (the hold queue wakes held requests)."""
        self._listeners.append(listener)

    def replace(self, table: RoutingTable) -> bool:
        """Install ``table``; False when it is the one already held (same version and content).

        Raises:
            StaleTableError: its version is older than the one held, or equal with other
                content.
        """
        if table.version < self.version:
            raise StaleTableError(
                f"routing table version {table.version} is older than {self.version}"
            )
        if table.version == self.version:
            if self.table is not None and table == self.table:
                return False
            raise StaleTableError(
                f"routing table version {table.version} is already held with other content"
            )
        states: dict[str, EndpointState] = {}
        models: dict[str, ModelState] = {}
        for name, model in table.models.items():
            endpoints: list[EndpointState] = []
            for spec in model.endpoints:
                # One state per address across models: an address is one engine process.
                state = states.get(spec.address) or self._states.get(spec.address)
                if state is None:
                    state = EndpointState(spec)
                else:
                    state.update(spec)
                states[spec.address] = state
                endpoints.append(state)
            roles = RouteRoles(model) if model.backends or not model.serves_locally else None
            models[name] = ModelState(name, model.route, endpoints, roles)
        # The swap: readers on the event loop see the old or the new table, never a mixture.
        self.models, self._states, self.table, self.version = models, states, table, table.version
        self.providers = table.providers
        for listener in self._listeners:
            listener(self)
        return True

    def endpoints(self) -> Iterable[EndpointState]:
        """Every endpoint of every model, once each."""
        return self._states.values()
