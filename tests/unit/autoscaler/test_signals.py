"""The autoscaler's PromQL and the sample it builds from Prometheus and the routers."""

from __future__ import annotations

import pytest

from inferscale.api.v1alpha1.inference_model import ENGINES as API_ENGINES
from inferscale.autoscaler.signals import (
    ENGINE_METRICS,
    THROUGHPUT_WINDOW,
    EngineReading,
    RouterReading,
    build_queries,
    build_sample,
    parse_by_label,
    parse_vector,
    route_id,
    router_readings,
    spend_capped_rate,
    spilled_token_share,
    throughputs,
)
from inferscale.autoscaler.spillcost import SPILL_SHARE_WINDOW_S
from inferscale.autoscaler.spillprice import Throughput

NOW = 1_000_000.0


def test_one_query_covers_every_engine_and_groups_by_model() -> None:
    q = build_queries("inferscale_io_model", "namespace")
    for metrics in ENGINE_METRICS.values():
        for name in metrics.in_flight:
            assert name in q.in_flight
        if metrics.in_flight:
            # One gauge per engine: timestamp() drops names, so two would clash.
            assert metrics.in_flight[0] in q.freshness
            assert all(n not in q.freshness for n in metrics.in_flight[1:])
        for name in metrics.kv_cache:
            assert name in q.kv_cache
    assert q.in_flight.startswith("sum by (namespace, inferscale_io_model) (")
    assert 'inferscale_io_model!=""' in q.in_flight
    assert q.freshness.startswith("max by (namespace, inferscale_io_model) (timestamp(")
    # vLLM renamed its KV gauge; both names are read.
    assert "vllm:gpu_cache_usage_perc" in q.kv_cache and "vllm:kv_cache_usage_perc" in q.kv_cache


def test_the_throughput_queries_rate_every_engines_token_counters_over_one_window() -> None:
    q = build_queries("inferscale_io_model", "namespace")
    for metrics in ENGINE_METRICS.values():
        assert all(n in q.prompt_rate for n in metrics.prompt_tokens)
        assert all(n in q.output_rate for n in metrics.output_tokens)
        assert all(n in q.mean_in_flight for n in metrics.in_flight)
    assert q.prompt_rate.startswith("sum by (namespace, inferscale_io_model) (rate(")
    assert q.prompt_rate.endswith("[10m]))")
    # The mean of the per-model sum (a subquery): the raw gauges would clash without names.
    assert q.mean_in_flight == f"avg_over_time(({q.in_flight})[10m:5s])"


def test_the_spilled_token_share_reads_the_routers_over_the_throughput_window() -> None:
    q = build_queries("inferscale_io_model", "namespace")
    # The engines' side is the throughput read's rates over the same 10 m, the recent window.
    assert q.spilled_tokens == (
        "sum by (model) (rate(inferscale_router_spillover_tokens_total[10m]))"
    )
    assert SPILL_SHARE_WINDOW_S == 600.0 and THROUGHPUT_WINDOW == "10m"


@pytest.mark.parametrize(
    ("spilled", "engines", "expected"),
    [
        (10.0, Throughput(60.0, 30.0, 4.0), (0.10, 100.0)),
        (0.0, Throughput(40.0, 10.0, 4.0), (0.0, 50.0)),
        (None, Throughput(40.0, 10.0, 4.0), (None, None)),  # no counter (or none spilled)
        (5.0, None, (None, None)),  # engines without token counters: never "all spilled"
        (0.0, Throughput(0.0, 0.0, 0.0), (None, None)),  # an idle window says nothing
        (float("nan"), Throughput(1.0, 1.0, 1.0), (None, None)),
        (-1.0, Throughput(1.0, 1.0, 1.0), (None, None)),
    ],
)
def test_the_spilled_token_share_is_unknown_without_both_rates(spilled, engines, expected) -> None:
    share, rate = spilled_token_share(spilled, engines)
    if expected[0] is None:
        assert (share, rate) == (None, None)
    else:
        assert (share, rate) == pytest.approx(expected)


def test_the_routers_spilled_tokens_are_read_per_served_name() -> None:
    result = [
        {"metric": {"model": "llama"}, "value": [NOW, "12.5"]},
        {"metric": {"model": ""}, "value": [NOW, "1"]},
        {"metric": {}, "value": [NOW, "1"]},
        {"metric": {"model": "qwen"}, "value": [NOW, "NaN"]},
        "junk",
    ]
    assert parse_by_label(result, "model") == {"llama": 12.5}
    assert parse_by_label({"not": "a vector"}, "model") == {}


def test_the_sample_carries_the_spilled_token_share_and_the_capped_spill() -> None:
    kwargs = {
        "engine": "vllm",
        "now": NOW,
        "ready": 1,
        "starting": 0,
        "prometheus_configured": True,
        "prometheus": EngineReading(in_flight=3.0, sampled_at=NOW),
        "prometheus_error": None,
        "router": None,
        "router_error": None,
        "stale_after": 30.0,
    }
    sample, unknown = build_sample(**kwargs, spilled_tokens=(0.12, 900.0))
    assert unknown is None and (sample.spilled_token_share, sample.token_rate) == (0.12, 900.0)
    assert build_sample(**kwargs)[0].spilled_token_share is None
    assert build_sample(**kwargs, spend_capped=0.5)[0].spend_capped == 0.5
    assert build_sample(**kwargs)[0].spend_capped is None


def test_the_capped_spill_is_read_per_route_over_the_last_two_minutes() -> None:
    q = build_queries("inferscale_io_model", "namespace")
    assert q.spend_capped == ("sum by (route) (rate(inferscale_router_spend_capped_total[2m]))")
    result = [
        {"metric": {"route": "ns/chat"}, "value": [NOW, "0.25"]},
        {"metric": {"route": "ns/idle"}, "value": [NOW, "0"]},
        {"metric": {"route": "ml/bad"}, "value": [NOW, "NaN"]},
        {"metric": {}, "value": [NOW, "1"]},
    ]
    rates = parse_by_label(result, "route")
    assert rates == {"ns/chat": 0.25, "ns/idle": 0.0}
    # The routers' label is the route's namespace/name (the spill route spillprice picks).
    assert route_id("ns", "chat") == "ns/chat" and route_id("ns", None) is None
    assert spend_capped_rate(rates, "ns/chat") == 0.25
    # The read answered without the route: no router has capped it (no series yet).
    assert spend_capped_rate(rates, "ns/other") == 0.0
    # Unknown: the read failed, or the model has no spill route.
    assert spend_capped_rate(None, "ns/chat") is None
    assert spend_capped_rate(rates, None) is None


def test_a_model_missing_one_throughput_value_has_no_throughput() -> None:
    a, b = ("ns", "a"), ("ns", "b")
    found = throughputs({a: 10.0, b: 1.0}, {a: 2.0}, {a: 4.0, b: 1.0})
    assert found == {a: Throughput(10.0, 2.0, 4.0)}


def test_every_api_engine_has_its_gauges_listed() -> None:
    assert set(ENGINE_METRICS) == set(API_ENGINES)


def test_custom_labels_are_used() -> None:
    q = build_queries("model", "kubernetes_namespace")
    assert "by (kubernetes_namespace, model)" in q.in_flight
    assert 'model!=""' in q.kv_cache


def series(value: object, **labels: str) -> dict[str, object]:
    return {"metric": {"namespace": "ns", "inferscale_io_model": "m", **labels}, "value": value}


def test_parse_vector_reads_values_per_model() -> None:
    result = [
        series([NOW, "12"]),
        {"metric": {"namespace": "ns", "inferscale_io_model": "b"}, "value": [NOW, "0.5"]},
    ]
    values, problems = parse_vector(result, "inferscale_io_model", "namespace")
    assert values == {("ns", "m"): 12.0, ("ns", "b"): 0.5}
    assert problems == []


@pytest.mark.parametrize(
    "entry",
    [
        series([NOW, "NaN"]),
        series([NOW, "+Inf"]),
        series([NOW, "twelve"]),
        series(None),
        series([NOW]),
        {"metric": {"namespace": "ns"}, "value": [NOW, "1"]},
        {"value": [NOW, "1"]},
        "garbage",
    ],
)
def test_bad_series_are_left_out_and_reported_never_zero(entry: object) -> None:
    values, problems = parse_vector([entry], "inferscale_io_model", "namespace")
    assert values == {}
    assert len(problems) == 1


def test_a_result_that_is_not_a_vector_is_a_problem() -> None:
    values, problems = parse_vector({"resultType": "matrix"}, "inferscale_io_model", "namespace")
    assert values == {} and problems


def sample(**kwargs: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = dict(
        engine="sim",
        now=NOW,
        prometheus_configured=True,
        ready=2,
        starting=0,
        prometheus=EngineReading(in_flight=10, sampled_at=NOW - 2, kv_cache=0.3),
        prometheus_error=None,
        router=RouterReading(held=0, in_flight=7),
        router_error=None,
        stale_after=30,
    )
    args.update(kwargs)
    return build_sample(**args)  # type: ignore[arg-type]


def test_in_flight_is_the_larger_of_engines_and_routers() -> None:
    s, unknown = sample()
    assert unknown is None
    assert s.in_flight == 10 and s.kv_cache_usage == 0.3 and s.ready == 2
    s, _ = sample(router=RouterReading(held=3, in_flight=25))
    assert s.in_flight == 25 and s.held == 3


def test_stale_engine_metrics_make_the_load_unknown() -> None:
    s, unknown = sample(prometheus=EngineReading(in_flight=10, sampled_at=NOW - 45))
    assert s.in_flight is None
    assert unknown is not None and "45 s old" in unknown


def test_prometheus_failure_makes_the_load_unknown_while_replicas_serve() -> None:
    s, unknown = sample(prometheus=None, prometheus_error="Prometheus at x did not answer")
    assert s.in_flight is None and unknown == "Prometheus at x did not answer"


def test_ready_replicas_without_series_are_unknown_not_zero() -> None:
    # A renamed metric or a broken scrape: Prometheus answers, but nothing for this model.
    s, unknown = sample(prometheus=None)
    assert s.in_flight is None
    assert unknown is not None and "no engine metrics for 2 ready replicas" in unknown
    assert "vllm:num_requests_running" in unknown


def test_no_replica_means_zero_engine_load_and_held_requests_count() -> None:
    s, unknown = sample(ready=0, starting=0, prometheus=None, router=RouterReading(4, 0))
    assert unknown is None
    assert s.in_flight == 0 and s.held == 4


def test_without_prometheus_configured_the_routers_alone_decide() -> None:
    s, unknown = sample(prometheus_configured=False, prometheus=None, router=RouterReading(0, 9))
    assert unknown is None and s.in_flight == 9


def test_unreachable_routers_make_the_load_unknown() -> None:
    s, unknown = sample(router=None, router_error="router sys/r-1: timed out")
    assert s.in_flight is None and unknown == "router sys/r-1: timed out"


def test_an_engine_without_gauges_uses_the_routers_count() -> None:
    s, unknown = sample(engine="trtllm", prometheus=None, router=RouterReading(1, 30))
    assert unknown is None and s.in_flight == 30 and s.held == 1


def test_nothing_at_all_is_unknown() -> None:
    s, unknown = sample(engine="trtllm", prometheus=None, router=None)
    assert s.in_flight is None and unknown is not None


def test_a_sample_without_timestamp_is_stale() -> None:
    s, unknown = sample(prometheus=EngineReading(in_flight=3, sampled_at=None))
    assert s.in_flight is None and unknown is not None and "timestamp" in unknown


def test_requests_at_hosted_providers_count_as_load() -> None:
    # Spilled requests are demand the replicas did not meet: hiding them would keep the model
    # from scaling up while spillover takes the excess.
    s, unknown = sample(router=RouterReading(held=0, in_flight=7, hosted_in_flight=5))
    assert unknown is None and s.in_flight == 10 + 5


def test_prompt_tokens_waiting_come_from_the_routers() -> None:
    s, unknown = sample(router=RouterReading(held=0, in_flight=7, pending_prompt_tokens=45_000))
    assert unknown is None and s.pending_prompt_tokens == 45_000
    s, _ = sample(router=RouterReading(held=0, in_flight=7))
    assert s.pending_prompt_tokens is None


def test_router_documents_are_summed_per_model() -> None:
    docs = [
        {
            "models": {
                "m": {"held": 1, "inFlight": 4, "hostedInFlight": 2, "pendingPromptTokens": 9}
            }
        },
        {"models": {"m": {"held": 2, "inFlight": 3, "pendingPromptTokens": 30}, "n": {}}},
    ]
    readings = router_readings(docs)
    assert readings["m"] == RouterReading(3, 7, 2, 39)
    assert readings["n"] == RouterReading(0, 0, 0, None)


@pytest.mark.parametrize(
    "bad", [None, -4, "12", True, 1.5], ids=["absent", "negative", "text", "bool", "float"]
)
def test_a_router_without_a_token_count_makes_the_sum_unknown(bad: object) -> None:
    # A partial sum would understate the work: unknown, and the policy sizes on requests.
    counts = {"held": 0, "inFlight": 3}
    if bad is not None:
        counts["pendingPromptTokens"] = bad
    first = {"models": {"m": {"inFlight": 1, "pendingPromptTokens": 500}}}
    docs = [first, {"models": {"m": counts}}]
    assert router_readings(docs)["m"] == RouterReading(0, 4, 0, None)


@pytest.mark.parametrize("doc", [None, "text", [], {"models": []}, {"models": {"m": 3}}])
def test_malformed_router_documents_add_nothing(doc: object) -> None:
    assert router_readings([doc]) == {}
