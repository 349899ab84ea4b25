"""The autoscaler loop against FakeKubeApi: actuation, explanations, holds on bad signals.

Prometheus and the routers are replaced by stand-ins that return what each case needs (the real
Prometheus and routers are exercised in e2e/test_autoscaling.py); the policy is the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from inferscale.autoscaler.prometheus import PrometheusRound
from inferscale.autoscaler.signals import EngineReading, RouterReading
from inferscale.autoscaler.spillprice import Throughput
from inferscale.config import AutoscalerSettings, OperatorSettings
from inferscale.controller import autoscaler as autoscaler_module
from inferscale.controller import inference_model
from inferscale.controller.autoscaler import Autoscaler
from inferscale.controller.inference_model import Runtime
from inferscale.kube.fake import FakeKubeApi

MODEL_KEY = ("inferscale.io/v1alpha1", "InferenceModel", "ns", "llama")
NOW = 1_800_000_000.0


class Events(list):
    def __call__(self, type_, reason, message):
        self.append((type_, reason, message))


class FakePrometheus:
    def __init__(self) -> None:
        self.round = PrometheusRound()

    async def read(self) -> PrometheusRound:
        return self.round


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def model_body(**spec: Any) -> dict[str, Any]:
    autoscaling = {"targetInFlightPerReplica": 4, "panicWindowSeconds": 6}
    autoscaling.update(spec.pop("autoscaling", {}))
    return {
        "apiVersion": "inferscale.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "llama", "namespace": "ns", "uid": "uid-llama", "generation": 1},
        "spec": {
            "model": "hf://org/llama",
            "engine": "sim",
            "resources": {"gpus": 0},
            "minReplicas": 1,
            "maxReplicas": 8,
            "autoscaling": autoscaling,
            **spec,
        },
    }


def ready_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"inferscale.io/model": "llama"},
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Events:
    collected = Events()
    monkeypatch.setattr(autoscaler_module, "event_poster", lambda body: collected)
    monkeypatch.setattr(inference_model, "event_poster", lambda body: collected)
    return collected


@pytest.fixture
def setup(events: Events) -> tuple[Runtime, Autoscaler, FakePrometheus, Clock]:
    runtime = Runtime(api=FakeKubeApi(), settings=OperatorSettings())
    prometheus = FakePrometheus()
    clock = Clock()
    api: FakeKubeApi = runtime.api  # type: ignore[assignment]

    def models() -> list[dict[str, Any]]:
        return [o for (_, kind, _, _), o in api.objects.items() if kind == "InferenceModel"]

    scaler = Autoscaler(
        runtime,
        AutoscalerSettings(prometheus_url="http://prometheus.invalid:9090"),
        models,
        prometheus=prometheus,  # type: ignore[arg-type]
        routers=lambda: None,
        clock=clock,
        monotonic=clock,
    )
    return runtime, scaler, prometheus, clock


def status(runtime: Runtime) -> dict[str, Any]:
    api: FakeKubeApi = runtime.api  # type: ignore[assignment]
    return api.objects[MODEL_KEY].get("status") or {}


def condition(runtime: Runtime, type_: str) -> dict[str, Any] | None:
    return next((c for c in status(runtime).get("conditions") or [] if c["type"] == type_), None)


async def settle(runtime: Runtime) -> None:
    """Let the reconcile the autoscaler scheduled run (it coalesces for 0.2 s)."""
    for _ in range(50):
        await asyncio.sleep(0.05)
        if not runtime.pending:
            return
    raise AssertionError("the scheduled reconcile did not finish")


async def start(runtime: Runtime, pods: int = 1, **spec: Any) -> None:
    api: FakeKubeApi = runtime.api  # type: ignore[assignment]
    api.put(model_body(**spec))
    await inference_model.reconcile_model(
        runtime, api.objects[MODEL_KEY], post_event=Events(), now=lambda: "2027-01-15T08:00:00Z"
    )
    for i in range(pods):
        api.put(ready_pod(f"llama-{i}"))


def load(prometheus: FakePrometheus, clock: Clock, in_flight: float, kv: float = 0.1) -> None:
    reading = EngineReading(in_flight=in_flight, sampled_at=clock.now - 1, kv_cache=kv)
    prometheus.round = PrometheusRound(readings={("ns", "llama"): reading})


def deployment_replicas(runtime: Runtime) -> int:
    api: FakeKubeApi = runtime.api  # type: ignore[assignment]
    return int(api.objects[("apps/v1", "Deployment", "ns", "llama")]["spec"]["replicas"])


async def test_a_burst_scales_up_through_the_reconcile_and_says_why(setup, events) -> None:
    runtime, scaler, prometheus, clock = setup
    await start(runtime)
    load(prometheus, clock, 3)
    await scaler.round()
    assert runtime.autoscaled.get(("ns", "llama")) is None  # 3 in flight fit one replica
    clock.now += 2
    load(prometheus, clock, 20)
    await scaler.round()
    await settle(runtime)
    want = runtime.autoscaled[("ns", "llama")]
    assert want > 1
    assert deployment_replicas(runtime) == want
    st = status(runtime)
    assert st["desiredReplicas"] == want
    assert st["lastScaleReason"].startswith(f"scaled 1 -> {want}")
    assert "in flight, target 4 per replica" in st["lastScaleReason"]
    assert st["signals"]["inFlight"] == 20
    assert st["autoscalerState"]
    assert condition(runtime, "ScalingActive")["status"] == "True"
    assert ("Normal", "ScaledUp", st["lastScaleReason"]) in events


async def test_prometheus_down_holds_and_the_condition_says_why(setup, events) -> None:
    runtime, scaler, prometheus, clock = setup
    await start(runtime, pods=2, replicas=None)
    prometheus.round = PrometheusRound(error="Prometheus at http://p:9090 did not answer in time")
    for _ in range(5):
        await scaler.round()
        clock.now += 2
    assert ("ns", "llama") not in runtime.autoscaled
    active = condition(runtime, "ScalingActive")
    assert active is not None and active["status"] == "False"
    assert active["reason"] == "SignalsUnavailable"
    assert "did not answer in time" in active["message"]
    assert "holding at 1 replicas" in active["message"]
    warnings = [e for e in events if e[0] == "Warning"]
    assert len(warnings) == 1, "a hold is one Event, not one per round"
    # Prometheus is back: the condition turns True again.
    load(prometheus, clock, 2)
    await scaler.round()
    assert condition(runtime, "ScalingActive")["status"] == "True"


async def test_a_renamed_metric_holds_instead_of_scaling_to_minimum(setup) -> None:
    runtime, scaler, prometheus, clock = setup
    await start(runtime, pods=3, minReplicas=1, autoscaling={"scaleDownDelaySeconds": 0})
    runtime.autoscaled[("ns", "llama")] = 3
    prometheus.round = PrometheusRound()  # answers, but no series for this model
    for _ in range(10):
        await scaler.round()
        clock.now += 30
    assert runtime.autoscaled[("ns", "llama")] == 3
    active = condition(runtime, "ScalingActive")
    assert active is not None and "no engine metrics for 3 ready replicas" in active["message"]


async def test_a_garbled_saved_state_starts_fresh_windows(setup) -> None:
    runtime, scaler, prometheus, clock = setup
    await start(runtime)
    api: FakeKubeApi = runtime.api  # type: ignore[assignment]
    api.objects[MODEL_KEY]["status"]["autoscalerState"] = "{not json"
    load(prometheus, clock, 2)
    await scaler.round()
    assert condition(runtime, "ScalingActive")["status"] == "True"


async def test_settings_the_policy_refuses_are_a_condition_not_a_crash(setup) -> None:
    runtime, scaler, prometheus, clock = setup
    # The API accepts both windows on their own; the policy refuses panic > stable.
    await start(runtime, autoscaling={"panicWindowSeconds": 120, "stableWindowSeconds": 60})
    load(prometheus, clock, 50)
    await scaler.round()
    assert ("ns", "llama") not in runtime.autoscaled
    active = condition(runtime, "ScalingActive")
    assert active is not None and active["reason"] == "InvalidSettings"
    assert "panic_window_s" in active["message"]


async def test_autoscaling_off_leaves_the_count_to_the_spec(setup) -> None:
    runtime, scaler, prometheus, clock = setup
    await start(runtime, replicas=2, autoscaling={"enabled": False})
    load(prometheus, clock, 500)
    await scaler.round()
    assert ("ns", "llama") not in runtime.autoscaled
    assert condition(runtime, "ScalingActive") is None


async def test_held_requests_scale_from_zero(setup, events) -> None:
    runtime, scaler, prometheus, clock = setup
    await start(runtime, pods=0, minReplicas=0, autoscaling={"scaleToZeroDelaySeconds": 60})
    assert deployment_replicas(runtime) == 0
    prometheus.round = PrometheusRound()
    scaler.routers = lambda: _StubRouters({"llama": RouterReading(held=3, in_flight=0)})  # type: ignore[assignment,return-value]
    await scaler.round()
    await settle(runtime)
    assert deployment_replicas(runtime) >= 1
    assert status(runtime)["lastScaleReason"].startswith("scaled 0 -> ")


class _StubPublisher:
    def __init__(self, readings: dict[str, RouterReading]) -> None:
        self.readings = readings

    async def read_routers(self, path: str, timeout: float) -> tuple[list[Any], list[str]]:
        assert path == "/admin/v1/held"
        models = {k: {"held": v.held, "inFlight": v.in_flight} for k, v in self.readings.items()}
        return [{"version": 1, "models": models}], []


class _StubRouters:
    def __init__(self, readings: dict[str, RouterReading]) -> None:
        self.publisher = _StubPublisher(readings)


async def test_a_model_deleted_between_read_and_write_is_skipped(setup) -> None:
    runtime, scaler, prometheus, clock = setup
    await start(runtime)
    api: FakeKubeApi = runtime.api  # type: ignore[assignment]
    body = api.objects[MODEL_KEY]
    scaler.models = lambda: [body]
    del api.objects[MODEL_KEY]
    load(prometheus, clock, 50)
    await scaler.round()  # no exception


async def test_a_held_request_at_zero_starts_a_round_at_once(setup) -> None:
    runtime, scaler, prometheus, clock = setup
    await start(runtime, pods=0, minReplicas=0, autoscaling={"scaleToZeroDelaySeconds": 60})
    prometheus.round = PrometheusRound()
    readings: dict[str, RouterReading] = {}
    scaler.routers = lambda: _StubRouters(readings)  # type: ignore[assignment,return-value]
    scaler.monotonic = time.monotonic  # real time for the loop's waits
    scaler.settings = AutoscalerSettings(interval_seconds=300, from_zero_poll_seconds=0.05)
    rounds = 0
    real_round = scaler.round

    async def counting_round() -> None:
        nonlocal rounds
        rounds += 1
        await real_round()

    scaler.round = counting_round  # type: ignore[method-assign]
    task = asyncio.create_task(scaler.run())
    try:
        await asyncio.sleep(0.3)
        assert rounds == 1 and scaler.at_zero == {"llama"}
        readings["llama"] = RouterReading(held=1, in_flight=0)
        for _ in range(40):
            await asyncio.sleep(0.05)
            if rounds >= 2:
                break
        assert rounds == 2, "the held request did not start a round before the interval"
        await settle(runtime)
        assert deployment_replicas(runtime) >= 1
        assert scaler.at_zero == set()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_steady_model_is_not_rewritten_every_round(setup) -> None:
    # A thousand models would otherwise cost a status write each per interval.
    runtime, scaler, prometheus, clock = setup
    await start(runtime, pods=2)
    runtime.autoscaled[("ns", "llama")] = 2
    api: FakeKubeApi = runtime.api  # type: ignore[assignment]
    load(prometheus, clock, 6)
    await scaler.round()
    api.calls.clear()
    for _ in range(30):  # a minute of rounds, four status intervals
        clock.now += 2
        load(prometheus, clock, 6)  # scraped again, the same load
        await scaler.round()
    assert [c for c in api.calls if c[0] in ("patch_status", "get")] == []
    # The load moves: its signals are written at the next interval, not before.
    load(prometheus, clock, 7)
    clock.now += 20
    await scaler.round()
    assert [c[0] for c in api.calls].count("patch_status") == 1
    assert status(runtime)["signals"]["inFlight"] == 7


async def test_a_long_hold_is_one_write_and_one_event(setup, events) -> None:
    runtime, scaler, prometheus, clock = setup
    await start(runtime, pods=2)
    runtime.autoscaled[("ns", "llama")] = 2  # 6 in flight, target 4: two is right
    load(prometheus, clock, 6)
    await scaler.round()
    api: FakeKubeApi = runtime.api  # type: ignore[assignment]
    api.calls.clear()
    for _ in range(30):  # the scrape stopped: the sample only ages
        clock.now += 2
        await scaler.round()
    assert [c[0] for c in api.calls].count("patch_status") == 1
    assert [e[1] for e in events if e[0] == "Warning"] == ["SignalsUnavailable"]
    assert "old (stale after 30 s)" in condition(runtime, "ScalingActive")["message"]


# -- the cost-aware mode's prices ---------------------------------------------------------

ROUTE = {
    "apiVersion": "inferscale.io/v1alpha1",
    "kind": "InferenceRoute",
    "metadata": {"name": "chat", "namespace": "ns", "uid": "uid-chat", "generation": 1},
    "spec": {
        "backends": [
            {"inferenceModel": "llama", "role": "primary"},
            {"provider": {"name": "openai", "model": "gpt-4o-mini"}, "role": "spillover"},
        ],
        "spend": {"maxPerHour": 2},
    },
}
PROVIDER = {
    "apiVersion": "inferscale.io/v1alpha1",
    "kind": "InferenceProvider",
    "metadata": {"name": "openai", "namespace": "ns", "uid": "uid-openai", "generation": 1},
    "spec": {
        "type": "openai",
        "apiKeySecretRef": {"name": "openai-api-key", "key": "api-key"},
        "models": [
            {
                "name": "gpt-4o-mini",
                "inputPricePerMillionTokens": 0.15,
                "outputPricePerMillionTokens": 0.60,
            }
        ],
    },
}
# 4 requests in flight on average brought 400 prompt and 100 output tokens a second.
SEEN = Throughput(prompt_tokens_per_s=400.0, output_tokens_per_s=100.0, mean_in_flight=4.0)


def with_spill_sources(scaler: Autoscaler, runtime: Runtime) -> None:
    """Routes and providers from the fake API, as kopf's indices would hand them over."""
    api: FakeKubeApi = runtime.api  # type: ignore[assignment]

    def sources() -> tuple[list[Any], list[Any]]:
        kinds = [k for (_, k, _, _) in api.objects]
        objects = list(api.objects.values())
        routes = [o for k, o in zip(kinds, objects) if k == "InferenceRoute"]
        providers = [o for k, o in zip(kinds, objects) if k == "InferenceProvider"]
        return routes, providers

    scaler.spill_sources = sources


def put_spill_route(runtime: Runtime) -> FakeKubeApi:
    """The route that spills the model over to the provider, and the provider, in the fake API."""
    api: FakeKubeApi = runtime.api  # type: ignore[assignment]
    api.put(ROUTE)
    api.put(PROVIDER)
    return api


def priced_load(prometheus: FakePrometheus, clock: Clock, in_flight: float) -> None:
    load(prometheus, clock, in_flight)
    prometheus.round.throughput = {("ns", "llama"): SEEN}


async def test_a_priced_spill_route_turns_the_mode_on_and_a_missing_price_off(
    setup, events
) -> None:
    runtime, scaler, prometheus, clock = setup
    with_spill_sources(scaler, runtime)
    api = put_spill_route(runtime)
    await start(runtime, autoscaling={"acceleratorHourPrice": 3.0})
    priced_load(prometheus, clock, 2)
    await scaler.round()
    cost = condition(runtime, "CostAware")
    assert cost is not None and (cost["status"], cost["reason"]) == ("True", "SpillPriced")
    # 100 + 25 tokens/s per request in flight, 4 at the target: 1.44 M + 0.36 M an hour.
    assert "spilling its load 0.432" in cost["message"] and "spend cap 2" in cost["message"]
    assert ("Normal", "SpillPriced", cost["message"]) in events
    params = scaler.memory[("ns", "llama")].params
    assert params is not None and params.cost_mode
    # The user drops the price: the ordinary policy, a Warning naming the field.
    body = api.objects[MODEL_KEY]
    body["spec"]["autoscaling"].pop("acceleratorHourPrice")
    body["metadata"]["generation"] = 2
    clock.now += 2
    # A quiet spell does not lose the throughput: the last usable reading is kept.
    load(prometheus, clock, 0)
    await scaler.round()
    cost = condition(runtime, "CostAware")
    assert cost is not None and (cost["status"], cost["reason"]) == ("False", "PriceMissing")
    assert "spec.autoscaling.acceleratorHourPrice is not set" in cost["message"]
    assert ("Warning", "PriceMissing", cost["message"]) in events
    params = scaler.memory[("ns", "llama")].params
    assert params is not None and not params.cost_mode
    assert condition(runtime, "ScalingActive")["reason"] == "ValidSignals"


async def test_without_a_spill_route_the_condition_says_so_quietly(setup, events) -> None:
    runtime, scaler, prometheus, clock = setup
    with_spill_sources(scaler, runtime)
    await start(runtime, autoscaling={"acceleratorHourPrice": 3.0})
    priced_load(prometheus, clock, 2)
    await scaler.round()
    cost = condition(runtime, "CostAware")
    assert cost is not None and (cost["status"], cost["reason"]) == ("False", "NoSpillover")
    assert not [e for e in events if e[1] == "NoSpillover"]


async def test_an_absurd_provider_price_falls_back_with_a_warning(setup, events) -> None:
    runtime, scaler, prometheus, clock = setup
    with_spill_sources(scaler, runtime)
    api: FakeKubeApi = runtime.api  # type: ignore[assignment]
    api.put(ROUTE)
    absurd = {**PROVIDER, "spec": {**PROVIDER["spec"]}}
    absurd["spec"]["models"] = [{"name": "gpt-4o-mini", "inputPricePerMillionTokens": 1_000_000}]
    api.put(absurd)
    await start(runtime, autoscaling={"acceleratorHourPrice": 3.0})
    priced_load(prometheus, clock, 2)
    await scaler.round()
    cost = condition(runtime, "CostAware")
    assert cost is not None and (cost["status"], cost["reason"]) == ("False", "PriceOutOfRange")
    assert "InferenceProvider openai" in cost["message"]
    assert [e for e in events if e[:2] == ("Warning", "PriceOutOfRange")]


async def test_a_restart_after_an_hour_in_the_cost_mode_never_scales_a_loaded_model_to_zero(
    setup,
) -> None:
    runtime, scaler, prometheus, clock = setup
    with_spill_sources(scaler, runtime)
    api = put_spill_route(runtime)
    spec = {
        "minReplicas": 0,
        "autoscaling": {
            "acceleratorHourPrice": 3.0,
            "preset": "economy",
            "scaleToZeroDelaySeconds": 60,
            "scaleDownDelaySeconds": 0,
        },
    }
    await start(runtime, pods=2, **spec)
    runtime.autoscaled[("ns", "llama")] = 2
    for _ in range(30):  # a minute of light load in the mode
        priced_load(prometheus, clock, 3)
        await scaler.round()
        clock.now += 2
    assert condition(runtime, "CostAware")["reason"] == "SpillPriced"
    assert status(runtime)["desiredReplicas"] == 1  # the mode followed the light load down
    saved = status(runtime)["autoscalerState"]
    # The operator was down for an hour: a new loop starts from the saved windows, and the load
    # is there.
    fresh = Autoscaler(
        runtime,
        scaler.settings,
        scaler.models,
        prometheus=prometheus,  # type: ignore[arg-type]
        routers=lambda: None,
        clock=clock,
        monotonic=clock,
    )
    with_spill_sources(fresh, runtime)
    runtime.autoscaled.pop(("ns", "llama"))
    api.objects[MODEL_KEY]["status"]["autoscalerState"] = saved
    clock.now += 3600
    counts = []
    for _ in range(120):  # four minutes, past every delay
        priced_load(prometheus, clock, 3)
        await fresh.round()
        counts.append(status(runtime)["desiredReplicas"])
        clock.now += 2
    # minReplicas 0 and a 60 s scale-to-zero delay, but the load is there: never zero.
    assert min(counts) == 1 and condition(runtime, "CostAware")["reason"] == "SpillPriced"


async def test_a_route_that_stops_spilling_turns_the_mode_off(setup, events) -> None:
    runtime, scaler, prometheus, clock = setup
    with_spill_sources(scaler, runtime)
    api = put_spill_route(runtime)
    await start(runtime, autoscaling={"acceleratorHourPrice": 3.0})
    priced_load(prometheus, clock, 2)
    await scaler.round()
    assert condition(runtime, "CostAware")["reason"] == "SpillPriced"
    # The route's spillover backend goes (a new generation of the same route).
    route = api.objects[("inferscale.io/v1alpha1", "InferenceRoute", "ns", "chat")]
    route["spec"]["backends"] = route["spec"]["backends"][:1]
    route["metadata"]["generation"] = 2
    clock.now += 2
    priced_load(prometheus, clock, 2)
    await scaler.round()
    cost = condition(runtime, "CostAware")
    assert (cost["status"], cost["reason"]) == ("False", "NoSpillover")
    assert ("Normal", "NoSpillover", cost["message"]) in events


@pytest.mark.parametrize(("capped_route", "scales"), [("ns/chat", True), ("ns/other", False)])
async def test_a_burst_the_spend_cap_stops_spilling_scales_up_at_once(
    setup, capped_route, scales
) -> None:
    runtime, scaler, prometheus, clock = setup
    with_spill_sources(scaler, runtime)
    api = put_spill_route(runtime)
    await start(runtime, autoscaling={"acceleratorHourPrice": 3.0})
    api.objects[MODEL_KEY].setdefault("status", {})["timeToReadySeconds"] = 60
    for _ in range(10):
        priced_load(prometheus, clock, 2)
        await scaler.round()
        clock.now += 2
    assert condition(runtime, "CostAware")["reason"] == "SpillPriced"
    # A burst, and the routers count requests the spill route's cap (ns/chat) kept back.
    priced_load(prometheus, clock, 40)
    prometheus.round.spend_capped = {capped_route: 0.5}
    await scaler.round()
    st = status(runtime)
    if scales:
        assert runtime.autoscaled[("ns", "llama")] > 1
        assert st["lastScaleReason"].startswith("scaled 1 -> ")
        assert "spend cap reached: spill stopped, scaling for the excess" in st["lastScaleReason"]
    else:  # another route's cap: this model's burst still spills for a start-up (today's mode)
        assert st["desiredReplicas"] == 1 and "lastScaleReason" not in st
        assert json.loads(st["autoscalerState"])["over_since"] is not None


def with_settings(scaler: Autoscaler, runtime: Runtime, **settings: Any) -> Autoscaler:
    """The same loop, started with other autoscaler settings (as the operator reads them)."""
    fresh = Autoscaler(
        runtime,
        AutoscalerSettings(prometheus_url="http://prometheus.invalid:9090", **settings),
        scaler.models,
        prometheus=scaler.prometheus,
        routers=lambda: None,
        clock=scaler.clock,
        monotonic=scaler.monotonic,
    )
    with_spill_sources(fresh, runtime)
    return fresh


async def test_the_operator_wide_price_prices_a_model_without_its_own_and_says_so(
    setup, events
) -> None:
    runtime, scaler, prometheus, clock = setup
    scaler = with_settings(
        scaler,
        runtime,
        accelerator_hour_prices={
            "nvidia.com/gpu": 2.0,
            "nvidia.com/gpu.product=NVIDIA-L4": 0.8,
        },
        default_accelerator_hour_price=5.0,
    )
    api = put_spill_route(runtime)
    await start(runtime, resources={"gpus": 2})
    priced_load(prometheus, clock, 2)
    await scaler.round()
    cost = condition(runtime, "CostAware")
    assert cost is not None and (cost["status"], cost["reason"]) == ("True", "SpillPriced")
    source = "2 per accelerator from operator setting autoscaler.acceleratorHourPrices"
    assert f"a replica-hour costs 4 ({source}[nvidia.com/gpu] x 2 GPUs)" in cost["message"]
    assert ("Normal", "SpillPriced", cost["message"]) in events
    params = scaler.memory[("ns", "llama")].params
    assert params is not None and params.cost_mode and params.replica_hour_price == 4.0
    # Its own field wins (and a node label would win over the resource name).
    body = api.objects[MODEL_KEY]
    body["spec"]["autoscaling"]["acceleratorHourPrice"] = 3.0
    body["spec"]["scheduling"] = {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"}}
    body["metadata"]["generation"] = 2
    clock.now += 20  # past the status interval: the periodic write carries the new message
    priced_load(prometheus, clock, 3)
    await scaler.round()
    cost = condition(runtime, "CostAware")
    assert "a replica-hour costs 6 (3 per accelerator from spec.autoscaling" in cost["message"]
    assert scaler.memory[("ns", "llama")].params.replica_hour_price == 6.0


async def test_no_price_anywhere_is_price_missing_naming_every_place_never_a_scale_down(
    setup, events
) -> None:
    runtime, scaler, prometheus, clock = setup
    scaler = with_settings(scaler, runtime, accelerator_hour_prices={"amd.com/gpu": 2.0})
    put_spill_route(runtime)
    await start(runtime, pods=3, resources={"gpus": 1})
    runtime.autoscaled[("ns", "llama")] = 3
    for _ in range(5):
        priced_load(prometheus, clock, 12)  # three replicas' worth at 4
        await scaler.round()
        clock.now += 2
    cost = condition(runtime, "CostAware")
    assert cost is not None and (cost["status"], cost["reason"]) == ("False", "PriceMissing")
    assert "autoscaler.acceleratorHourPrices has no nvidia.com/gpu" in cost["message"]
    assert "autoscaler.defaultAcceleratorHourPrice is unset" in cost["message"]
    assert ("Warning", "PriceMissing", cost["message"]) in events
    # The ordinary policy keeps the replicas the load wants.
    assert runtime.autoscaled[("ns", "llama")] == 3


# -- why replicas stand after a burst --------------------------------------------------------


async def test_replicas_that_a_learned_floor_keeps_say_why_and_when_they_go(setup, events) -> None:
    runtime, scaler, prometheus, clock = setup
    # balanced (the default preset): a learned floor at p80 of recent bursts' wants. A 300 s
    # scale-down delay (the default), so each burst's replicas would go within minutes.
    await start(runtime, pods=1)
    clock.now = 1_800_000_000.0 // 300 * 300  # at a bucket's start
    for burst in range(6):  # a burst to 24 in flight (6 replicas' worth) every 10 min
        for second in range(0, 600, 2):
            load(prometheus, clock, 24 if second < 20 else 2)
            await scaler.round()
            clock.now += 2
    await settle(runtime)
    st = status(runtime)
    limited = condition(runtime, "ScalingLimited")
    assert limited is not None and (limited["status"], limited["reason"]) == (
        "True",
        "LearnedFloor",
    )
    floor = st["learnedFloor"]
    assert floor > 1 and runtime.autoscaled[("ns", "llama")] >= floor
    message = limited["message"]
    print("\n" + message)
    assert f"{floor} replicas stand although the load's peaks want 1 now" in message
    assert "the balanced preset's learned floor, the 80th percentile" in message
    assert "a burst counts half after 1 h" in message
    assert "at this load it falls to" in message and "at about 20" in message
    assert "spec.autoscaling.preset: economy" in message
    assert ("Normal", "LearnedFloor") in [e[:2] for e in events]
    # The bursts stop: the floor falls when its estimate said, and the condition follows.
    api: FakeKubeApi = runtime.api  # type: ignore[assignment]
    for _ in range(4 * 3600 // 20):
        load(prometheus, clock, 2)
        await scaler.round()
        clock.now += 20
        if api.objects[MODEL_KEY]["status"].get("learnedFloor", 0) <= 1:
            break
    limited = condition(runtime, "ScalingLimited")
    assert (limited["status"], limited["reason"]) == ("False", "FloorAtMinimum")
    assert status(runtime)["learnedFloor"] <= 1
    estimate = re.search(r"falls to 1 at about (\S+)Z", message)
    assert estimate is not None
    said = datetime.strptime(estimate.group(1), "%Y-%m-%dT%H:%M").replace(tzinfo=UTC)
    assert abs(clock.now - said.timestamp()) <= 20  # the round after the bucket starts
    assert ("Normal", "FloorAtMinimum") in [e[:2] for e in events]
