"""The cost-aware mode's prices for one model, from its spec, its route's provider and its traffic.

The operator's side of :mod:`inferscale.autoscaler.spillcost`: :func:`build_spill_pricing`
turns what the controller gathered into the policy's :class:`SpillPrices` and the model's
``CostAware`` condition.

- ``replica_hour_price``: the price of one accelerator for an hour times ``resources.gpus``
  (once for a replica without GPUs). The price is ``spec.autoscaling.acceleratorHourPrice``,
  else the operator's settings (:mod:`inferscale.autoscaler.pricebook`: by node label, by GPU
  resource name, or the default); the condition names which priced it.
- ``spill_price_per_replica_hour``: the price, at the spillover provider's
  ``inputPricePerMillionTokens`` and ``outputPricePerMillionTokens``, of the tokens one replica
  serves in an hour at its target. Those come from the engines' token counters: over a window,
  prompt (output) tokens per second divided by the mean requests in flight is what one request
  in flight brings per second (Little's law), times ``targetInFlightPerReplica`` times 3600.
  Measured at a lighter load than the target a request finishes sooner, so the figure errs
  high: spilling then looks dearer and more replicas stand, the safe side.
- ``spend_cap_per_hour``: the tighter of the route's ``spend.maxPerHour`` and
  ``spend.maxPerDay / 24`` (:func:`~inferscale.autoscaler.spillcost.hourly_spend_cap`).

The spill route is the first InferenceRoute (by name) in the model's namespace with the model
as a primary backend and a provider backend of role ``spillover`` (its first such backend).

Every way it can fail is a documented fallback, never an error: without a spill route, with a
price missing or out of range, or before any throughput has been seen, the policy runs as
without the mode (it keeps replicas for the load) and the condition says which field is at
fault. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from inferscale.api.meta import ConditionStatus
from inferscale.api.v1alpha1.inference_model import InferenceModelSpec
from inferscale.api.v1alpha1.inference_provider import InferenceProviderSpec, ProviderModel
from inferscale.api.v1alpha1.inference_route import InferenceRouteSpec
from inferscale.autoscaler.presets import PRESETS
from inferscale.autoscaler.pricebook import PriceBook, accelerator_hour_price
from inferscale.autoscaler.spillcost import MAX_PRICE_PER_HOUR, SpillPrices, hourly_spend_cap

CONDITION_COST_AWARE: Final = "CostAware"
"""True while the cost-aware mode runs; False (with the reason) while the ordinary policy does."""

REASON_PRICED: Final = "SpillPriced"
REASON_NOT_REQUESTED: Final = "NotRequested"
REASON_NO_SPILLOVER: Final = "NoSpillover"
REASON_PRICE_MISSING: Final = "PriceMissing"
REASON_PRICE_OUT_OF_RANGE: Final = "PriceOutOfRange"
REASON_THROUGHPUT_UNKNOWN: Final = "ThroughputUnknown"

QUIET_REASONS: Final = frozenset({REASON_NOT_REQUESTED, REASON_NO_SPILLOVER})
"""Reasons that are the normal state of a model without spillover: no Event when first set."""

MIN_MEAN_IN_FLIGHT: Final = 0.05
"""A window with fewer requests in flight on average says too little about throughput."""

ModelKey = tuple[str, str]
"""(namespace, name)."""


@dataclass(frozen=True, slots=True)
class SpillRoute:
    """Where a model's excess goes: a route's spillover backend on a provider."""

    route: str
    provider: str
    model: str
    """The provider's ``models[].name``."""
    spend_cap_per_hour: float | None = None
    """The spill spend per hour the mode plans within (None: the route has no cap)."""
    spend_cap_words: str = ""
    """Which of the route's caps set it, for the condition."""


@dataclass(frozen=True, slots=True)
class Throughput:
    """One model's engines over a window: token rates and the mean requests in flight."""

    prompt_tokens_per_s: float
    output_tokens_per_s: float
    mean_in_flight: float

    def usable(self) -> bool:
        """Finite, not negative, with enough requests in flight to mean something."""
        values = (self.prompt_tokens_per_s, self.output_tokens_per_s, self.mean_in_flight)
        return (
            all(math.isfinite(v) and v >= 0 for v in values)
            and self.mean_in_flight >= MIN_MEAN_IN_FLIGHT
            and self.prompt_tokens_per_s + self.output_tokens_per_s > 0
        )


@dataclass(frozen=True, slots=True)
class SpillPricing:
    """The policy's prices (None: no spill route, the mode is not asked for) and the condition."""

    prices: SpillPrices | None
    status: ConditionStatus
    reason: str
    message: str

    def condition(self) -> tuple[ConditionStatus, str, str]:
        """``CostAware`` as (status, reason, message)."""
        return self.status, self.reason, self.message


def _ident(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def spill_routes(routes: Iterable[Mapping[str, Any]]) -> dict[ModelKey, SpillRoute]:
    """Each model's spill route (see the module docstring).

    A route that does not parse is left out (the route's own status reports it).
    """
    found: dict[ModelKey, SpillRoute] = {}
    for body in sorted(routes, key=_ident):
        namespace, name = _ident(body)
        try:
            spec = InferenceRouteSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            continue
        spill = next(
            (b.provider for b in spec.backends if b.role == "spillover" and b.provider), None
        )
        if spill is None:
            continue
        cap, cap_words = hourly_spend_cap(spec.spend.max_per_hour, spec.spend.max_per_day)
        for backend in spec.backends:
            if backend.role != "primary" or backend.inference_model is None:
                continue
            found.setdefault(
                (namespace, backend.inference_model),
                SpillRoute(name, spill.name, spill.model, cap, cap_words),
            )
    return found


def provider_models(
    providers: Iterable[Mapping[str, Any]],
) -> dict[ModelKey, dict[str, ProviderModel] | None]:
    """Each provider's models by name; None for a provider whose spec does not parse."""
    found: dict[ModelKey, dict[str, ProviderModel] | None] = {}
    for body in providers:
        try:
            spec = InferenceProviderSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            found[_ident(body)] = None
            continue
        found[_ident(body)] = {m.name: m for m in spec.models}
    return found


def _price_problem(value: float, what: str) -> str | None:
    if math.isfinite(value) and 0 <= value <= MAX_PRICE_PER_HOUR:
        return None
    return f"{what} is {value:g}, outside 0 to {MAX_PRICE_PER_HOUR:g} per hour (a unit slip?)"


def build_spill_pricing(
    namespace: str,
    spec: InferenceModelSpec,
    route: SpillRoute | None,
    providers: Mapping[ModelKey, dict[str, ProviderModel] | None],
    throughput: Throughput | None,
    book: PriceBook | None = None,
) -> SpillPricing:
    """The cost-aware mode's prices for a model in ``namespace``, or why it cannot have them.

    ``route`` is its spill route (None: none), ``providers`` every provider's models by
    (namespace, name), ``throughput`` what its engines were last seen doing (None: not yet),
    ``book`` the operator's accelerator prices (None: the model's own field only).
    """
    a = spec.autoscaling
    if not PRESETS[a.preset].cost_aware:
        why = f"the {a.preset} preset keeps replicas for bursts whatever spilling would cost"
        return SpillPricing(None, "False", REASON_NOT_REQUESTED, why)
    if route is None:
        why = "no InferenceRoute has this model as a primary and a provider as spillover"
        return SpillPricing(None, "False", REASON_NO_SPILLOVER, why)
    gpus = max(spec.resources.gpus, 1)
    accelerator = accelerator_hour_price(spec, book or PriceBook())
    price = accelerator.price
    replica_hour = None if price is None else price * gpus
    unpriced = SpillPrices(replica_hour, None, route.spend_cap_per_hour)
    where = f"InferenceProvider {route.provider} (spillover of InferenceRoute {route.route})"
    if (namespace, route.provider) not in providers:
        return _missing(unpriced, f"{where} does not exist")
    models = providers[(namespace, route.provider)]
    if models is None:
        return _missing(unpriced, f"{where} has a spec that does not parse")
    offered = models.get(route.model)
    if offered is None:
        return _missing(unpriced, f"{where} has no spec.models entry named {route.model}")
    if offered.input_price_per_million_tokens == 0 == offered.output_price_per_million_tokens:
        return _missing(
            unpriced,
            f"{where} model {route.model}: inputPricePerMillionTokens and "
            "outputPricePerMillionTokens are both 0 (unset)",
        )
    if replica_hour is None:
        return _missing(unpriced, accelerator.source)
    times = f"x {gpus} GPUs" if spec.resources.gpus else "once for a replica without GPUs"
    priced_by = f"{price:g} per accelerator from {accelerator.source} {times}"
    problem = _price_problem(replica_hour, f"the replica-hour price ({priced_by})")
    if problem is not None:
        return _out_of_range(unpriced, problem)
    return _with_throughput(spec, route, offered, replica_hour, throughput, where, priced_by)


def _missing(prices: SpillPrices, message: str) -> SpillPricing:
    return SpillPricing(prices, "False", REASON_PRICE_MISSING, f"ordinary policy: {message}")


def _out_of_range(prices: SpillPrices, message: str) -> SpillPricing:
    return SpillPricing(prices, "False", REASON_PRICE_OUT_OF_RANGE, f"ordinary policy: {message}")


def _with_throughput(
    spec: InferenceModelSpec,
    route: SpillRoute,
    offered: ProviderModel,
    replica_hour: float,
    throughput: Throughput | None,
    where: str,
    priced_by: str,
) -> SpillPricing:
    """The spill price from the observed throughput, checked like the replica-hour price."""
    cap = route.spend_cap_per_hour
    if throughput is None or not throughput.usable():
        return SpillPricing(
            SpillPrices(replica_hour, None, cap),
            "False",
            REASON_THROUGHPUT_UNKNOWN,
            "ordinary policy: no token throughput observed yet for this model's engines "
            "(their prompt and generation token counters in Prometheus, over a busy window)",
        )
    per_request_s = 3600 * spec.autoscaling.target_in_flight_per_replica / throughput.mean_in_flight
    tokens_in = throughput.prompt_tokens_per_s * per_request_s
    tokens_out = throughput.output_tokens_per_s * per_request_s
    spill = (
        tokens_in * offered.input_price_per_million_tokens
        + tokens_out * offered.output_price_per_million_tokens
    ) / 1e6
    prices = SpillPrices(replica_hour, spill, cap)
    problem = _price_problem(
        spill,
        f"the spill price per replica-hour ({where} model {route.model} at "
        f"{tokens_in:.0f} prompt + {tokens_out:.0f} output tokens per replica-hour)",
    )
    if problem is not None:
        return _out_of_range(prices, problem)
    capped = "" if cap is None else f", spend cap {cap:.4g} per hour"
    if cap is not None and route.spend_cap_words:
        capped += f" ({route.spend_cap_words})"
    return SpillPricing(
        prices,
        "True",
        REASON_PRICED,
        f"a replica-hour costs {replica_hour:.4g} ({priced_by}), spilling its load "
        f"{spill:.4g} at {where} "
        f"model {route.model} ({tokens_in:.0f} prompt + {tokens_out:.0f} output tokens per "
        f"replica-hour at the target){capped}",
    )
