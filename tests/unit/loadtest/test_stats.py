"""Percentiles, windows, the reservoir, replica tracking and the recorder's counts."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferscale.loadtest.stats import (
    Outcome,
    Quantiles,
    RateWindow,
    Recorder,
    ReplicaTracker,
    Reservoir,
    SlidingSamples,
    percentile,
)
from tests.factories import make_model_status


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 0.5, 5.0),
        ([1.0, 2.0], 0.5, 1.5),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0.0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 1.0, 4.0),
        (list(map(float, range(1, 101))), 0.95, 95.05),
        (list(map(float, range(1, 101))), 0.99, 99.01),
        ([0.0, 10.0], 0.95, 9.5),
    ],
)
def test_percentile_interpolates_like_numpy_linear(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_refuses_empty_and_bad_q():
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200))
def test_quantiles_are_ordered_and_bounded(values):
    q = Quantiles.of(values)
    assert q is not None and q.count == len(values)
    assert min(values) <= q.p50 <= q.p95 <= q.p99 <= q.max == max(values)
    assert min(values) - 1e-6 <= q.mean <= max(values) + 1e-6


def test_quantiles_of_nothing_is_none():
    assert Quantiles.of([]) is None


def test_reservoir_is_exact_then_bounded_and_uniform():
    r = Reservoir(100, random.Random(0))
    for v in range(100):
        r.add(float(v))
    assert r.values == [float(v) for v in range(100)]
    for v in range(100, 10_000):
        r.add(float(v))
    assert len(r.values) == 100 and r.seen == 10_000
    # A uniform sample of 0..9999: its mean is near 5000 (sd of the mean ~ 290).
    assert abs(sum(r.values) / 100 - 5000) < 1200


def test_sliding_samples_forget_old_values_and_stay_bounded():
    w = SlidingSamples(10)
    w.add(0.0, 1.0)
    w.add(5.0, 2.0)
    w.add(9.0, 3.0)
    assert w.values(9.5) == [1.0, 2.0, 3.0]
    assert w.values(12.0) == [2.0, 3.0]
    assert w.values(100.0) == []
    small = SlidingSamples(10, max_samples=3)
    for i in range(10):
        small.add(float(i) / 10, float(i))
    assert small.values(1.0) == [7.0, 8.0, 9.0]


def test_rate_window_counts_whole_seconds():
    w = RateWindow(5, start=0.0)
    for i in range(100):
        w.add(i * 0.1)  # 10 per second for 10 s
    assert w.rate(10.0) == pytest.approx(10)
    assert w.rate(0.5) == 0  # no whole second yet
    early = RateWindow(5, start=0.0)
    for i in range(20):
        early.add(i * 0.1)
    assert early.rate(2.2) == pytest.approx(10)  # over the 2 s so far, not over 5
    assert w.rate(30.0) == 0


def test_replica_tracker_counts_ups_and_downs_and_keeps_history():
    t = ReplicaTracker()
    for at, desired, ready in [(0, 1, 1), (2, 3, 1), (4, 3, 3), (6, 5, 3), (8, 1, 5), (10, 1, 1)]:
        t.observe(at, "ns/m", desired, ready, f"to {desired}")
    r = t.models["ns/m"]
    assert (r.min_desired, r.max_desired, r.min_ready, r.max_ready) == (1, 5, 1, 5)
    assert (r.scale_ups, r.scale_downs) == (2, 1)
    assert list(r.history) == [1, 1, 3, 3, 5, 1]
    assert [(e.at, e.before, e.after, e.reason) for e in t.events] == [
        (2, 1, 3, "to 3"),
        (6, 3, 5, "to 5"),
        (8, 5, 1, "to 1"),
    ]


def test_replica_tracker_tolerates_unknown_counts():
    t = ReplicaTracker()
    t.observe(0, "ns/m", None, None, None)
    t.observe(1, "ns/m", 2, None, None)
    t.observe(2, "ns/m", None, 1, None)
    r = t.models["ns/m"]
    assert (r.min_desired, r.max_desired, r.min_ready, r.desired) == (2, 2, 1, 2)
    assert not t.events


def test_recorder_counts_every_outcome():
    rec = Recorder(100.0, random.Random(0))
    for i in range(4):
        rec.on_sent(100.0 + i, lag=0.01 * i)
    rec.on_dropped(103.5)
    rec.on_done(101.0, Outcome(True, 0.5, ttft=0.1, prompt_tokens=10, output_tokens=5))
    rec.on_done(102.0, Outcome(True, 0.7, prompt_tokens=10, output_tokens=5))
    rec.on_done(103.0, Outcome(False, 0.2, error="http 503"))
    rec.on_cancelled()
    assert (rec.sent, rec.ok, rec.dropped, rec.cancelled, rec.in_flight) == (4, 2, 1, 1, 0)
    assert rec.errors == {"http 503": 1} and rec.errored == 1
    assert (rec.prompt_tokens, rec.output_tokens) == (20, 10)
    assert rec.latency.values == [0.5, 0.7] and rec.ttft.values == [0.1]
    assert rec.recent_ttft.values(105.0) == [0.1]
    assert rec.max_lag == pytest.approx(0.03)


def test_recorder_tracks_models_relative_to_its_start():
    rec = Recorder(50.0, random.Random(0))
    rec.on_models(52.0, [make_model_status(desired=1, ready=1)])
    rec.on_models(55.0, [make_model_status(desired=2, ready=1, reason="load")])
    (event,) = rec.replicas.events
    assert (event.at, event.model, event.before, event.after, event.reason) == (
        5.0,
        "default/m",
        1,
        2,
        "load",
    )
