"""Prometheus text parsing and histogram quantiles, checked against the router's own output."""

import math

import pytest

from inferscale.loadtest.promtext import (
    Sample,
    histogram_buckets,
    histogram_quantile,
    parse_samples,
    sum_by,
)
from inferscale.loadtest.routermetrics import counter_rate, router_snapshot, ttft_quantiles
from inferscale.router.metrics import RouterMetrics


def test_parse_samples_reads_labels_escapes_and_skips_junk():
    text = "\n".join(
        [
            "# HELP x y",
            'a{model="m",path="C:\\\\x",q="say \\"hi\\"\\n"} 3',
            "b 4.5 1700000000000",
            "c{} +Inf",
            'broken{model="m" 1',
            "nonumber{} abc",
            "lonely",
            "",
        ]
    )
    assert parse_samples(text) == [
        Sample("a", {"model": "m", "path": "C:\\x", "q": 'say "hi"\n'}, 3.0),
        Sample("b", {}, 4.5),
        Sample("c", {}, math.inf),
    ]


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 1.0), (0.375, 0.75), (0.25, 0.5), (0.9, 1.8), (1.0, 2.0)],
)
def test_histogram_quantile_interpolates_as_promql(q, expected):
    # 4 observations below 1 s (bucket 0.5..1 holds 2 of them), 4 more in 1..2 s.
    buckets = [(0.5, 2.0), (1.0, 4.0), (2.0, 8.0), (math.inf, 8.0)]
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_histogram_quantile_edges():
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0  # in +Inf: top bound


def test_the_routers_own_metrics_read_back():
    metrics = RouterMetrics()
    for value in (0.02, 0.03, 0.2, 0.4):
        metrics.ttft.observe(("llama",), value)
    metrics.count_request("llama", "pod-a", 200)
    metrics.count_request("llama", "pod-b", 200)
    text = metrics.render(
        in_flight=[("llama", "pod-a", 3), ("llama", "pod-b", 2)],
        held=[("llama", 4)],
        table_version=1,
    )
    snap = router_snapshot([text, text], at=10.0)  # two routers: everything doubles
    assert snap.in_flight == {"llama": 10.0}
    assert snap.held == {"llama": 8.0}
    assert snap.requests == {"llama": 4.0}
    p50, p95 = ttft_quantiles(snap, None, "llama")
    assert 0.025 <= p50 <= 0.25 and 0.25 <= p95 <= 0.5
    assert not snap.has_spillover


def test_ttft_and_rates_between_snapshots():
    def exposition(fast, slow, spilled):
        ttft = "inferscale_router_time_to_first_token_seconds_bucket"
        return "\n".join(
            [
                f'{ttft}{{model="m",le="0.1"}} {fast}',
                f'{ttft}{{model="m",le="1.0"}} {fast + slow}',
                f'{ttft}{{model="m",le="+Inf"}} {fast + slow}',
                f'inferscale_router_spillover_total{{model="m",provider="openai"}} {spilled}',
            ]
        )

    old = router_snapshot([exposition(100, 0, 5)], at=0.0)
    new = router_snapshot([exposition(100, 10, 25)], at=10.0)
    # Since the start everything was fast; in the last interval every stream was slow.
    assert ttft_quantiles(new, None, "m")[0] <= 0.1
    assert ttft_quantiles(new, old, "m")[0] > 0.1
    assert counter_rate(new, old, "spillover", "m") == pytest.approx(2.0)
    assert counter_rate(new, None, "spillover", "m") is None
    assert new.has_spillover
    # A restarted router (counts went down) is read from zero.
    restarted = router_snapshot([exposition(1, 0, 0)], at=20.0)
    assert ttft_quantiles(restarted, new, "m")[0] <= 0.1
    assert ttft_quantiles(new, old, "other") == (None, None)


def test_sum_by_and_buckets_group_by_label():
    samples = parse_samples('x{model="a"} 1\nx{model="b"} 2\nx{model="a"} 3\ny 9\n')
    assert sum_by(samples, "x", "model") == {"a": 4.0, "b": 2.0}
    assert histogram_buckets(parse_samples('h_bucket{le="bad"} 1\n'), "h", "model") == {}
