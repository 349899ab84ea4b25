"""The routing table: the versioned document the operator pushes to every router.

:class:`RoutingTable` is the wire schema (camelCase JSON, like the API): served model name →
route settings (InferenceRoute's own fields), endpoints (pod, ``host:port``, ready, engine,
weight) and the route's other backends (hosted provider models and other served models, each
with its role: primary, spillover, fallback or mirror); and the hosted providers by
``<namespace>/<name>`` (type, base URL, timeout, models with their provider-side names and
prices, never an API key: keys travel in the credentials document). The operator compiles it
with a pure function (``reconcile.routing``), PUTs it to every router pod and keeps the last
one in a ConfigMap that a starting router reads; :func:`table_json` is that stored form.

The router's live copy (endpoint state, circuit breakers, compiled routes) is
``inferscale.router.table``; nothing here holds runtime state.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Final

from pydantic import Field, model_validator

from inferscale.api.meta import ApiModel, nested
from inferscale.api.v1alpha1.inference_model import (
    MAX_ADAPTERS,
    SERVED_NAME_PATTERN,
    InferenceModelSpec,
)
from inferscale.api.v1alpha1.inference_provider import (
    AzureSettings,
    BedrockSettings,
    InferenceProviderSpec,
    ProviderType,
    VertexSettings,
)
from inferscale.api.v1alpha1.inference_route import (
    HoldQueue,
    InferenceRouteSpec,
    PrefixHash,
    Retries,
    Role,
    RouteBackend,
    SpendCaps,
    Strategy,
    Timeouts,
)
from inferscale.errors import InferscaleError
from inferscale.protocol.defaults import IN_FLIGHT_PER_REPLICA

ADDRESS_PATTERN: Final = r"^[A-Za-z0-9.\-]{1,253}:[0-9]{1,5}$"
"""``host:port`` of an engine pod (an IPv4 address or a DNS name; no scheme, no path)."""

_SERVED_NAME: Final = re.compile(SERVED_NAME_PATTERN)


def _as_in_api(model: type[ApiModel], name: str) -> Any:
    # The field as the API's ``model`` declares it: its default, bounds and description are
    # written once, there, and the table carries them unchanged.
    return copy.copy(model.model_fields[name])


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

    adapters: list[str] = Field(default_factory=list, max_length=MAX_ADAPTERS)
    """The LoRA adapters loaded there (the model status' ``loadedOn``): requests for one of
    them prefer the endpoints that hold it."""


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
    """The API it speaks (InferenceProvider's ``type``)."""

    base_url: str = Field(alias="baseURL", pattern=r"^https?://[^\s]+$", max_length=2048)
    """Base URL of the API (defaults, presets, locations and regions resolved)."""

    timeout_seconds: float = _as_in_api(InferenceProviderSpec, "timeout_seconds")
    anthropic_version: str = _as_in_api(InferenceProviderSpec, "anthropic_version")
    azure: AzureSettings | None = _as_in_api(InferenceProviderSpec, "azure")
    vertex: VertexSettings | None = _as_in_api(InferenceProviderSpec, "vertex")
    bedrock: BedrockSettings | None = _as_in_api(InferenceProviderSpec, "bedrock")

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

    weight: int = _as_in_api(RouteBackend, "weight")
    mirror_percent: float | None = _as_in_api(RouteBackend, "mirror_percent")

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

    in_flight_per_replica: int = Field(default=IN_FLIGHT_PER_REPLICA, ge=1, le=100_000)
    """A ready replica is saturated at this many of this router's requests in flight."""

    prompt_tokens_per_replica: int | None = Field(default=None, ge=1, le=100_000_000)
    """A ready replica is also saturated when the prompt tokens of this router's requests
    there that have no first token yet, plus the new request's, exceed this (None: off)."""

    on_cold_start: bool = True
    """Spill over at once while no replica is ready, rather than holding the request."""


class RouteSettings(ApiModel):
    """How requests for one model are routed: InferenceRoute's settings, compiled.

    The fields a route's spec declares are taken from :class:`InferenceRouteSpec` itself
    (:meth:`from_route` copies them by name); only ``spillover`` differs, because the table
    carries the threshold the operator resolved (the route's, else the model's autoscaling
    target). A new route setting is one field in the API plus its name in :data:`ROUTE_FIELDS`.
    """

    strategy: Strategy = _as_in_api(InferenceRouteSpec, "strategy")
    prefix_hash: PrefixHash = _as_in_api(InferenceRouteSpec, "prefix_hash")
    retries: Retries = _as_in_api(InferenceRouteSpec, "retries")
    timeouts: Timeouts = _as_in_api(InferenceRouteSpec, "timeouts")
    hold_queue: HoldQueue = _as_in_api(InferenceRouteSpec, "hold_queue")

    spillover: SpilloverSettings = nested(SpilloverSettings)
    """When spillover backends are used (the threshold resolved)."""

    # Declared after spillover, as before the fields came from the API: the table's JSON keeps
    # its key order, so a stored table reads back byte for byte.
    spend: SpendCaps = _as_in_api(InferenceRouteSpec, "spend")

    @classmethod
    def from_route(cls, spec: InferenceRouteSpec, in_flight_per_replica: int) -> RouteSettings:
        """``spec``'s settings, with spillover at ``in_flight_per_replica`` unless it sets one."""
        spill = spec.spillover
        return cls(
            **{name: getattr(spec, name) for name in ROUTE_FIELDS},
            spillover=SpilloverSettings(
                in_flight_per_replica=spill.in_flight_per_replica or in_flight_per_replica,
                prompt_tokens_per_replica=spill.prompt_tokens_per_replica,
                on_cold_start=spill.on_cold_start,
            ),
        )


ROUTE_FIELDS: Final = ("strategy", "prefix_hash", "retries", "timeouts", "hold_queue", "spend")
"""The settings that pass from an InferenceRoute's spec to the table unchanged."""


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

    adapters: list[str] = Field(default_factory=list, max_length=MAX_ADAPTERS)
    """LoRA adapters served on these endpoints: clients send an adapter's name as ``model``,
    and the request goes to this model's replicas with the body unchanged."""

    adapter_slots: int = _as_in_api(InferenceModelSpec, "adapter_slots")


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
    def _adapter_names(self) -> RoutingTable:
        # An adapter's name is a model name to clients: valid, and not served twice.
        seen: set[str] = set()
        for name, model in self.models.items():
            names = [*model.adapters, *(a for e in model.endpoints for a in e.adapters)]
            bad = [a for a in names if not _SERVED_NAME.fullmatch(a)]
            if bad:
                raise ValueError(f"model {name!r}: invalid adapter names: {bad[:5]}")
            taken = []
            for adapter in model.adapters:
                if adapter in self.models or adapter in seen:
                    taken.append(adapter)
                seen.add(adapter)
            if taken:
                raise ValueError(f"model {name!r}: adapter names served twice: {taken[:5]}")
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


def table_json(table: RoutingTable) -> str:
    """The table as pushed and stored: camelCase JSON without the defaults.

    Routers fill the defaults in again; leaving them out keeps a thousand models' table well
    inside a ConfigMap's 1 MiB.
    """
    return table.model_dump_json(by_alias=True, exclude_defaults=True)
