"""InferenceRoute: the model name clients send, mapped to self-hosted and hosted backends.

Backends have roles: ``primary`` backends share traffic by weight; ``spillover`` takes the excess
while every primary is saturated or cold-starting; ``fallback`` takes requests the primaries
failed; ``mirror`` receives a copy of a share of requests whose responses are discarded. An
InferenceModel without a route is served under its own served name with the defaults below.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from inferscale.api.meta import (
    DNS_SUBDOMAIN_PATTERN,
    ApiModel,
    CelRule,
    Condition,
    Resource,
    nested,
)
from inferscale.api.v1alpha1.inference_model import SERVED_NAME_PATTERN

KIND: Final = "InferenceRoute"
PLURAL = "inferenceroutes"

Role = Literal["primary", "spillover", "fallback", "mirror"]
Strategy = Literal[
    "leastInFlight", "leastPrefill", "prefixHash", "weighted", "roundRobin", "predictedTTFT"
]
OnCapReached = Literal["queue", "reject"]
CacheScope = Literal["perKey", "shared"]
CacheWhen = Literal["temperatureZero", "always"]
SelectionPolicy = Literal["cost", "latency", "weighted"]


class ProviderBackend(ApiModel):
    """A model of an InferenceProvider."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """Name of the InferenceProvider in the route's namespace."""

    model: str = Field(pattern=SERVED_NAME_PATTERN)
    """One of the provider's ``models[].name``."""


class RouteBackend(ApiModel):
    """One place requests for the route can go."""

    __cel_rules__ = (
        CelRule(
            rule="has(self.inferenceModel) != has(self.provider)",
            message="a backend must name exactly one of inferenceModel or provider",
            check=lambda s: (s.inference_model is None) != (s.provider is None),
        ),
        CelRule(
            rule="self.role == 'mirror' || !has(self.mirrorPercent)",
            message="mirrorPercent is only allowed on a backend with role mirror",
            check=lambda s: s.role == "mirror" or s.mirror_percent is None,
            field_path=".mirrorPercent",
        ),
    )

    inference_model: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN
    )
    """Name of an InferenceModel in the route's namespace."""

    provider: ProviderBackend | None = None
    """A hosted provider's model."""

    role: Role = "primary"
    """primary, spillover, fallback or mirror."""

    weight: int = Field(default=1, ge=0, le=1_000_000)
    """Share of traffic among primaries (weighted strategy and primaries of different kinds)."""

    mirror_percent: float | None = Field(default=None, ge=0, le=100)
    """Percentage of requests copied to a mirror backend (default 100)."""


class PrefixHash(ApiModel):
    """Bounded-load consistent hashing on the prompt prefix (as KubeAI's CHWBL)."""

    load_bound: float = Field(default=1.25, ge=1, le=10)
    """An endpoint takes no more than this multiple of the mean load before the next is tried."""

    prefix_characters: int = Field(default=256, ge=1, le=1_000_000)
    """Characters of the prompt that the hash covers."""

    replicas_per_endpoint: int = Field(default=64, ge=1, le=1024)
    """Points on the hash ring per endpoint."""


class Retries(ApiModel):
    """Retries before the first byte reaches the client, always on another endpoint."""

    max_attempts: int = Field(default=3, ge=1, le=10)
    """Attempts in total, the first one included."""

    on_status: list[int] = Field(default_factory=lambda: [502, 503, 504], max_length=16)
    """Upstream statuses that are retried (connect errors always are)."""


class Timeouts(ApiModel):
    """Per-request time limits."""

    first_token_seconds: float = Field(default=120, gt=0, le=86_400)
    """Longest wait for the first byte of the answer."""

    total_seconds: float = Field(default=600, gt=0, le=86_400)
    """Longest whole request."""


class Spillover(ApiModel):
    """When requests go to spillover backends."""

    in_flight_per_replica: int | None = Field(default=None, ge=1, le=100_000)
    """A primary replica counts as saturated at this many requests in flight; defaults to the
    model's autoscaling target."""

    prompt_tokens_per_replica: int | None = Field(default=None, ge=1, le=100_000_000)
    """A primary replica also counts as saturated when the prompt tokens it has not answered
    with a first token yet, plus this request's, exceed this (the prefill queued ahead of the
    request's first token). Unset: only ``inFlightPerReplica`` counts. A starting point: the
    time-to-first-token budget times the replica's prefill rate times 0.8, for example
    2 s x 3,000 tokens/s x 0.8 = 4,800 on an L4 serving an 8B model. Prompt tokens are
    estimated as the request body's bytes / 4."""

    on_cold_start: bool = True
    """Spill over while a primary has no ready replica instead of holding the request."""


class HoldQueue(ApiModel):
    """Requests held while a model has no ready replica (scale from zero, cold start)."""

    max_requests: int = Field(default=100, ge=0, le=1_000_000)
    """Most requests held per model; past it the answer is 503 with Retry-After."""

    max_wait_seconds: float = Field(default=300, ge=0, le=3600)
    """Longest a request is held before it gets 503 with Retry-After."""


class SpendCaps(ApiModel):
    """Spend limits on hosted providers; past a cap, spillover (and mirroring) stops."""

    max_per_hour: float | None = Field(default=None, ge=0)
    """Most spent per clock hour (UTC), in the providers' price currency."""

    max_per_day: float | None = Field(default=None, ge=0)
    """Most spent per day (UTC). The cost-aware autoscaler of the route's primary models plans
    their spill within the tighter of ``maxPerHour`` and ``maxPerDay / 24`` per hour, so the
    day's cap is not spent by noon (docs/autoscaling.md, step 7b)."""

    on_cap_reached: OnCapReached = "queue"
    """What happens to a request that would spill over once a cap is reached: ``queue`` sends
    it to the primaries as if there were no spillover (held while no replica is ready, queued
    at the replicas while they are saturated); ``reject`` answers 503 with ``Retry-After``
    (the seconds until the capped hour or day ends)."""


class ResponseCache(ApiModel):
    """The route's response cache: repeated and paraphrased questions answered from it.

    Two layers: the same request (normalised) answers at once; then the nearest cached question
    whose embedding is at least ``threshold`` similar, under the same route, model, system
    prompt, earlier turns and parameters (a question from another conversation never matches).
    """

    enabled: bool = False
    """Whether the route's answers are cached and served from the cache."""

    threshold: float | None = Field(default=None, ge=0.5, le=1.0)
    """Cosine similarity from which a cached question counts as the same question (unset: the
    threshold the project measured for its embedding model, docs/cache.md); 1.0 is the exact
    layer alone."""

    ttl_seconds: int = Field(default=3600, ge=1, le=30 * 86_400)
    """How long an answer stays in the cache."""

    max_entries: int = Field(default=10_000, ge=1, le=1_000_000)
    """Most answers each router keeps for the route; past it the oldest go first."""

    max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024, le=8 * 1024 * 1024 * 1024)
    """Most memory (answers, questions and vectors) each router keeps for the route."""

    scope: CacheScope = "perKey"
    """``perKey``: each client key has its own answers (none crosses tenants); ``shared``:
    every caller of the route shares them."""

    when: CacheWhen = "temperatureZero"
    """Which requests may be answered from the cache: ``temperatureZero`` only those that ask
    for ``temperature: 0`` (a deterministic answer); ``always`` any request."""


class SelectionCandidate(ApiModel):
    """One model a selecting route may send a request to, with its price and quality tier."""

    # maxLength (the pattern's own bound) keeps the distinct-names rule inside CEL's budget.
    model: str = Field(max_length=128, pattern=SERVED_NAME_PATTERN)
    """A served model name: an InferenceModel's, or the model name of a route whose primaries
    are hosted providers. It must not select by itself."""

    input_price_per_million_tokens: float = Field(default=0, ge=0)
    """Price of a million prompt tokens (for a self-hosted model: set by hand, or its GPU-hour
    price divided by its measured throughput)."""

    output_price_per_million_tokens: float = Field(default=0, ge=0)
    """Price of a million completion tokens."""

    tier: int = Field(default=0, ge=0, le=100)
    """Quality tier: higher is stronger; prompts scored hard go to the highest tier."""

    weight: int = Field(default=1, ge=0, le=1_000_000)
    """The weighted policy's share of requests (an A/B split across models)."""


class RouteSelection(ApiModel):
    """Model selection per request: the candidates and how one is chosen (docs/selection.md)."""

    __cel_rules__ = (
        CelRule(
            rule="self.candidates.all(c, self.candidates.exists_one(d, d.model == c.model))",
            message="selection candidates must name distinct models",
            check=lambda s: len({c.model for c in s.candidates}) == len(s.candidates),
            field_path=".candidates",
        ),
        CelRule(
            rule="self.policy != 'weighted' || self.candidates.exists(c, c.weight > 0)",
            message="the weighted policy needs a candidate with a positive weight",
            check=lambda s: s.policy != "weighted" or any(c.weight > 0 for c in s.candidates),
            field_path=".candidates",
        ),
    )

    policy: SelectionPolicy = "cost"
    """cost: the cheapest candidate good enough for the prompt's predicted difficulty;
    latency: the candidate expected to answer first; weighted: a random candidate in
    proportion to its weight (A/B across models under one name)."""

    strong_share: float = Field(default=0.4, ge=0, le=1)
    """The cost policy's share of prompts for the highest tier, as calibrated on the
    difficulty model's training prompts (``bench/selection`` prints the one to ship)."""

    candidates: list[SelectionCandidate] = Field(min_length=2, max_length=16)
    """The models to choose from; the first serves when the difficulty model is unavailable."""


class InferenceRouteSpec(ApiModel):
    """The desired state of a route."""

    __cel_rules__ = (
        CelRule(
            rule="has(self.selection) || (has(self.backends) &&"
            " self.backends.exists(b, b.role == 'primary' && b.weight > 0))",
            message="backends need at least one primary with a positive weight",
            check=lambda s: (
                s.selection is not None
                or any(b.role == "primary" and b.weight > 0 for b in s.backends)
            ),
            field_path=".backends",
        ),
        CelRule(
            rule="!has(self.selection) || !has(self.backends) || size(self.backends) == 0",
            message="a route has either backends or a selection, not both",
            check=lambda s: s.selection is None or not s.backends,
            field_path=".selection",
        ),
    )

    model_name: str | None = Field(default=None, pattern=SERVED_NAME_PATTERN)
    """The name clients send as ``model``; defaults to the route's own name."""

    backends: list[RouteBackend] = Field(default_factory=list, max_length=32)
    """Where requests go, with roles and weights (none on a selecting route)."""

    selection: RouteSelection | None = None
    """Choose among other served models per request instead of having backends."""

    strategy: Strategy = "predictedTTFT"
    """How an endpoint is picked among the primaries' ready replicas. The default,
    predictedTTFT, scores each replica's cached share of the prompt from its engine's KV events
    (optimization.kvCacheEvents); where the engines publish none, or the router cannot hash
    prompts as the engine does (it can for the sim), it picks as leastPrefill."""

    prefix_hash: PrefixHash = nested(PrefixHash)
    """Settings of the prefixHash strategy."""

    retries: Retries = nested(Retries)
    """Retries before the first byte."""

    timeouts: Timeouts = nested(Timeouts)
    """Time limits."""

    spillover: Spillover = nested(Spillover)
    """When spillover backends are used."""

    hold_queue: HoldQueue = nested(HoldQueue)
    """The cold-start hold queue."""

    spend: SpendCaps = nested(SpendCaps)
    """Spend caps on hosted providers."""

    cache: ResponseCache = nested(ResponseCache)
    """The response cache (off unless enabled)."""


class Spend(ApiModel):
    """Money spent on hosted providers through this route."""

    last_hour: float = Field(default=0, ge=0)
    """Spent in the current hour."""

    today: float = Field(default=0, ge=0)
    """Spent in the current day (UTC)."""


class InferenceRouteStatus(ApiModel):
    """The observed state of a route, written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` this status describes."""

    ready_backends: int | None = Field(default=None, ge=0)
    """Backends that can take requests now."""

    spilling: bool | None = None
    """Whether requests are going to spillover backends now."""

    spend: Spend | None = None
    """Spend on hosted providers."""

    selections: dict[str, int] | None = Field(default=None, max_length=64)
    """A selecting route: requests sent to each candidate by the routers running now (each
    router counts from its start; its counts leave with its spend when its UTC day ends)."""

    cost_saved: float | None = None
    """A selecting route: what its answers would have cost more on its strongest candidate,
    counted like ``selections`` (negative: they cost more)."""

    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    """Ready (some primary can serve) and Degraded (a backend is missing or failing)."""


class InferenceRoute(Resource[InferenceRouteSpec, InferenceRouteStatus]):
    """A whole InferenceRoute object, as ``kubectl apply`` sends it."""

    kind: Literal["InferenceRoute"] = KIND
    """Kind."""
