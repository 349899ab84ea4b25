"""The cost-aware mode's prices built from a spec, a route's provider and the observed throughput,
with every fallback naming the field at fault."""

from __future__ import annotations

import math
from typing import Any

import pytest

from inferscale.api.v1alpha1.inference_model import InferenceModelSpec
from inferscale.autoscaler.policy import PolicyParams
from inferscale.autoscaler.spillcost import MAX_PRICE_PER_HOUR
from inferscale.autoscaler.spillprice import (
    SpillRoute,
    Throughput,
    build_spill_pricing,
    provider_models,
    spill_routes,
)
from tests.factories import make_model
from tests.manifests import example_docs

ROUTE = SpillRoute("chat", "openai", "gpt-4o-mini", spend_cap_per_hour=2.0)
# 10 requests in flight on average brought 1,000 prompt and 200 output tokens a second.
SEEN = Throughput(prompt_tokens_per_s=1000.0, output_tokens_per_s=200.0, mean_in_flight=10.0)


def route_body(name: str, *backends: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name},
        "spec": {"backends": list(backends), **spec},
    }


def provider_body(name: str = "openai", **model: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name},
        "spec": {
            "type": "openai",
            "apiKeySecretRef": {"name": "k", "key": "api-key"},
            "models": [{"name": "gpt-4o-mini", **model}],
        },
    }


PRICED = provider_models(
    [provider_body(inputPricePerMillionTokens=0.15, outputPricePerMillionTokens=0.60)]
)


def spec(**autoscaling: Any) -> Any:
    return make_model(
        "sim",
        resources={"gpus": 2},
        autoscaling={"targetInFlightPerReplica": 8, "acceleratorHourPrice": 3.0, **autoscaling},
    )


def test_sane_inputs_give_both_prices_and_the_cap() -> None:
    pricing = build_spill_pricing("ns", spec(), ROUTE, PRICED, SEEN)
    assert pricing.status == "True" and pricing.reason == "SpillPriced"
    prices = pricing.prices
    assert prices is not None
    assert prices.replica_hour_price == 6.0  # 3.00 per GPU x 2 GPUs
    # One request in flight brings 100 prompt + 20 output tokens/s; 8 at the target, an hour:
    # 2.88 M prompt x 0.15 + 0.576 M output x 0.60 per million.
    assert prices.spill_price_per_replica_hour == pytest.approx(2.88 * 0.15 + 0.576 * 0.60)
    assert prices.spend_cap_per_hour == 2.0
    assert "2880000 prompt + 576000 output tokens" in pricing.message
    # And the policy takes them: the mode runs.
    params = PolicyParams.from_spec(spec(), 60.0, prices)
    assert params.cost_mode and params.spill_spend_cap_per_hour == 2.0


def test_a_replica_without_gpus_costs_the_price_once() -> None:
    no_gpu = make_model("sim", resources={"gpus": 0}, autoscaling={"acceleratorHourPrice": 0.5})
    pricing = build_spill_pricing("ns", no_gpu, ROUTE, PRICED, SEEN)
    assert pricing.prices is not None and pricing.prices.replica_hour_price == 0.5
    once = "(0.5 per accelerator from spec.autoscaling.acceleratorHourPrice once for a replica"
    assert f"{once} without GPUs)" in pricing.message


@pytest.mark.parametrize(
    ("model_spec", "route", "providers", "seen", "reason", "names"),
    [
        (spec(preset="latency"), ROUTE, PRICED, SEEN, "NotRequested", "latency preset"),
        (spec(), None, PRICED, SEEN, "NoSpillover", "no InferenceRoute"),
        (
            spec(acceleratorHourPrice=None),
            ROUTE,
            PRICED,
            SEEN,
            "PriceMissing",
            "spec.autoscaling.acceleratorHourPrice is not set",
        ),
        (spec(), ROUTE, {}, SEEN, "PriceMissing", "InferenceProvider openai"),
        (
            spec(),
            ROUTE,
            provider_models([provider_body()]),  # prices left at the CRD's default 0
            SEEN,
            "PriceMissing",
            "inputPricePerMillionTokens and outputPricePerMillionTokens are both 0",
        ),
        (
            spec(),
            SpillRoute("chat", "openai", "gpt-5"),
            PRICED,
            SEEN,
            "PriceMissing",
            "no spec.models entry named gpt-5",
        ),
        (
            spec(),
            ROUTE,
            {("ns", "openai"): None},
            SEEN,
            "PriceMissing",
            "does not parse",
        ),
        (spec(), ROUTE, PRICED, None, "ThroughputUnknown", "no token throughput"),
        # An idle window says nothing about throughput.
        (spec(), ROUTE, PRICED, Throughput(0.0, 0.0, 0.0), "ThroughputUnknown", "throughput"),
        (spec(), ROUTE, PRICED, Throughput(math.nan, 1.0, 5.0), "ThroughputUnknown", "throughput"),
        # 1,000,000 per GPU-hour (the API's most) on 8 GPUs: a unit slip.
        (
            make_model(
                "vllm", resources={"gpus": 8}, autoscaling={"acceleratorHourPrice": 1_000_000}
            ),
            ROUTE,
            PRICED,
            SEEN,
            "PriceOutOfRange",
            "spec.autoscaling.acceleratorHourPrice x 8 GPUs",
        ),
        # A price per token entered as per million: the spill price is absurd.
        (
            spec(),
            ROUTE,
            provider_models(
                [provider_body(inputPricePerMillionTokens=1_000_000, outputPricePerMillionTokens=1)]
            ),
            SEEN,
            "PriceOutOfRange",
            "the spill price per replica-hour (InferenceProvider openai",
        ),
    ],
)
def test_every_fallback_is_the_ordinary_policy_with_a_reason_naming_the_field(
    model_spec, route, providers, seen, reason, names
) -> None:
    pricing = build_spill_pricing("ns", model_spec, route, providers, seen)
    assert (pricing.status, pricing.reason) == ("False", reason)
    assert names in pricing.message
    params = PolicyParams.from_spec(model_spec, 60.0, pricing.prices)
    assert not params.cost_mode  # the ordinary policy, which keeps replicas for the load


def test_an_out_of_range_spill_price_is_above_the_bound() -> None:
    providers = provider_models(
        [provider_body(inputPricePerMillionTokens=1_000_000, outputPricePerMillionTokens=1)]
    )
    prices = build_spill_pricing("ns", spec(), ROUTE, providers, SEEN).prices
    assert prices is not None and prices.spill_price_per_replica_hour is not None
    assert prices.spill_price_per_replica_hour > MAX_PRICE_PER_HOUR


def test_the_spill_route_is_the_first_route_with_the_model_as_primary_and_a_provider_spill() -> (
    None
):
    primary = {"inferenceModel": "llama", "role": "primary"}
    routes = [
        route_body(
            "b-later",
            primary,
            {"provider": {"name": "groq", "model": "llama-8b"}, "role": "spillover"},
        ),
        route_body(
            "a-first",
            primary,
            {"provider": {"name": "openai", "model": "gpt-4o-mini"}, "role": "fallback"},
            {"provider": {"name": "openai", "model": "gpt-4o-mini"}, "role": "spillover"},
            spend={"maxPerHour": 2},
        ),
        # No spillover: not a spill route.
        route_body("0-plain", {"inferenceModel": "qwen", "role": "primary"}),
        # Does not parse (a backend with neither kind): left out, not fatal.
        route_body("0-broken", {"role": "primary"}),
    ]
    found = spill_routes(routes)
    assert found == {
        ("ns", "llama"): SpillRoute("a-first", "openai", "gpt-4o-mini", 2.0, "spend.maxPerHour 2")
    }


def test_the_day_cap_bounds_the_spill_spend_too_and_the_condition_says_which() -> None:
    spill = {"provider": {"name": "openai", "model": "gpt-4o-mini"}, "role": "spillover"}
    primary = {"inferenceModel": "llama", "role": "primary"}
    both = route_body("chat", primary, spill, spend={"maxPerHour": 5, "maxPerDay": 36})
    route = spill_routes([both])[("ns", "llama")]
    assert route.spend_cap_per_hour == 1.5  # 36 / 24, tighter than 5 an hour
    pricing = build_spill_pricing("ns", spec(), route, PRICED, SEEN)
    assert pricing.prices is not None and pricing.prices.spend_cap_per_hour == 1.5
    assert "spend cap 1.5 per hour (spend.maxPerDay 36 / 24)" in pricing.message
    params = PolicyParams.from_spec(spec(), 60.0, pricing.prices)
    assert params.spill_spend_cap_per_hour == 1.5
    # A day cap alone counts as well.
    day = route_body("chat", primary, spill, spend={"maxPerDay": 96})
    assert spill_routes([day])[("ns", "llama")].spend_cap_per_hour == 4.0


def test_the_documented_example_is_priced() -> None:
    # examples/sim-cost-aware.yaml with examples/openai-provider.yaml (docs/autoscaling.md).
    docs = {
        (name, doc["kind"]): doc
        for name, doc in example_docs()
        if name in ("sim-cost-aware.yaml", "openai-provider.yaml")
    }
    model = docs[("sim-cost-aware.yaml", "InferenceModel")]
    objects = [{**doc, "metadata": {**doc["metadata"], "namespace": "ns"}} for doc in docs.values()]
    routes = spill_routes(o for o in objects if o["kind"] == "InferenceRoute")
    route = routes[("ns", model["metadata"]["name"])]
    providers = provider_models(o for o in objects if o["kind"] == "InferenceProvider")
    model_spec = InferenceModelSpec.model_validate(model["spec"])
    pricing = build_spill_pricing("ns", model_spec, route, providers, SEEN)
    assert (pricing.status, pricing.reason) == ("True", "SpillPriced")
    assert pricing.prices is not None and pricing.prices.spend_cap_per_hour == 2
