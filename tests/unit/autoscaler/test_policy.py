"""The autoscaling policy: tables of cases, then hypothesis properties over whole runs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferscale.autoscaler.policy import (
    DEFAULT_SCALE_TO_ZERO_DELAY_S,
    Decision,
    History,
    PolicyParams,
    Sample,
    decide,
)
from inferscale.autoscaler.spillcost import SpillPrices
from tests.factories import make_model


def params(**overrides) -> PolicyParams:
    base = {"min_replicas": 1, "max_replicas": 10, "target_in_flight_per_replica": 16}
    base.update(overrides)
    return PolicyParams(**base)


def steady(load: float, until: float, *, every: float = 2.0, span: float = 60.0) -> History:
    """A history of constant ``load`` sampled every ``every`` s over ``span`` s up to ``until``."""
    n = int(span / every)
    samples = tuple((until - span + every * (i + 1), load) for i in range(n))
    return History(samples=samples, last_sample_at=until)


def one(p, history, now, current, **sample) -> Decision:
    return decide(p, history, Sample(at=now, **sample), now, current)


# ----- PolicyParams ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"target_in_flight_per_replica": 0}, "target_in_flight_per_replica"),
        ({"target_in_flight_per_replica": -3}, "target_in_flight_per_replica"),
        ({"target_in_flight_per_replica": math.nan}, "target_in_flight_per_replica"),
        ({"target_in_flight_per_replica": math.inf}, "target_in_flight_per_replica"),
        ({"min_replicas": 5, "max_replicas": 2}, "must not exceed max_replicas"),
        ({"min_replicas": -1}, "min_replicas must be >= 0"),
        ({"stable_window_s": 0}, "stable_window_s"),
        ({"panic_window_s": 120}, "panic_window_s (120) must not exceed"),
        ({"max_scale_up_step": 0}, "max_scale_up_step"),
        ({"scale_down_delay_s": -1}, "scale_down_delay_s"),
        ({"scale_to_zero_delay_s": 60}, "needs min_replicas == 0"),
        ({"min_replicas": 0, "scale_to_zero_delay_s": -5}, "scale_to_zero_delay_s must be"),
        ({"kv_cache_saturation": 0}, "kv_cache_saturation"),
        ({"max_scale_down_rate": 0.5}, "max_scale_down_rate"),
        ({"max_scale_down_rate": math.nan}, "max_scale_down_rate"),
        ({"kv_cache_saturation": 1.5}, "kv_cache_saturation"),
        ({"time_to_ready_s": -1}, "time_to_ready_s"),
        ({"stale_after_s": 0}, "stale_after_s"),
        ({"prompt_tokens_per_replica": 0}, "prompt_tokens_per_replica"),
        ({"prompt_tokens_per_replica": math.inf}, "prompt_tokens_per_replica"),
    ],
)
def test_absurd_params_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        params(**overrides)


def test_params_from_spec_defaults():
    p = PolicyParams.from_spec(make_model(minReplicas=1, maxReplicas=4), time_to_ready_s=75.0)
    assert p == PolicyParams(
        min_replicas=1,
        max_replicas=4,
        target_in_flight_per_replica=16,
        stable_window_s=60,
        panic_window_s=6,
        max_scale_up_step=4,
        scale_down_delay_s=300,
        scale_to_zero_delay_s=None,
        kv_cache_saturation=0.8,
        time_to_ready_s=75.0,
        # The balanced preset's learned floor; no cost-aware mode without spill prices.
        learned_floor_quantile=0.8,
        cost_aware=False,
        spill_share_budget=0.08,
    )


def test_params_from_spec_carry_the_work_signal_and_the_learned_floor():
    spec = make_model(autoscaling={"promptTokensPerReplica": 40_000, "learnedFloorPercentile": 80})
    p = PolicyParams.from_spec(spec)
    assert (p.prompt_tokens_per_replica, p.learned_floor_quantile) == (40_000, 0.8)
    plain = PolicyParams.from_spec(make_model())
    assert (plain.prompt_tokens_per_replica, plain.learned_floor_quantile) == (None, 0.8)


@pytest.mark.parametrize(
    ("preset", "floor", "cost_aware", "budget"),
    [("economy", None, True, 0.40), ("balanced", 0.8, True, 0.08), ("latency", 0.9, False, 0.08)],
)
def test_each_preset_maps_to_its_policy_params(preset, floor, cost_aware, budget):
    spec = make_model(autoscaling={"preset": preset})
    prices = SpillPrices(3.0, 60.0, None)
    p = PolicyParams.from_spec(spec, spill=prices)
    assert (p.learned_floor_quantile, p.cost_aware, p.spill_share_budget) == (
        floor,
        cost_aware,
        budget,
    )
    assert (p.replica_hour_price, p.spill_price_per_replica_hour) == (3.0, 60.0)
    # No route to spill to: never the cost-aware mode, whatever the preset.
    assert not PolicyParams.from_spec(spec).cost_aware


def test_an_explicit_floor_wins_over_the_preset():
    spec = make_model(autoscaling={"preset": "economy", "learnedFloorPercentile": 70})
    assert PolicyParams.from_spec(spec).learned_floor_quantile == 0.7


@pytest.mark.parametrize("bad", ["fast", "", "Balanced", 3, None])
def test_an_unknown_preset_is_refused_by_the_api(bad):
    with pytest.raises(ValueError, match="preset"):
        make_model(autoscaling={"preset": bad})


@pytest.mark.parametrize(
    "bad",
    [
        {"promptTokensPerReplica": 0},
        {"learnedFloorPercentile": 0},
        {"learnedFloorPercentile": 101},
        {"learnedFloorPercentile": "most"},
    ],
)
def test_absurd_work_and_floor_fields_are_refused_by_the_api(bad):
    with pytest.raises(ValueError, match="autoscaling"):
        make_model(autoscaling=bad)


def test_params_from_spec_with_min_zero_defaults_the_idle_delay():
    p = PolicyParams.from_spec(make_model(minReplicas=0, maxReplicas=3))
    assert p.scale_to_zero_delay_s == DEFAULT_SCALE_TO_ZERO_DELAY_S
    p = PolicyParams.from_spec(
        make_model(
            minReplicas=0,
            autoscaling={
                "scaleToZeroDelaySeconds": 30,
                "targetInFlightPerReplica": 4,
                "stableWindowSeconds": 120,
                "panicWindowSeconds": 10,
                "maxScaleUpStep": 2,
                "scaleDownDelaySeconds": 0,
                "kvCacheSaturation": 0.9,
            },
        )
    )
    assert (p.scale_to_zero_delay_s, p.target_in_flight_per_replica, p.stable_window_s) == (
        30,
        4,
        120,
    )
    assert (p.panic_window_s, p.max_scale_up_step, p.scale_down_delay_s) == (10, 2, 0)
    assert p.kv_cache_saturation == 0.9


# ----- bad data holds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        (None, "holding at 3: no metrics (stale)"),
        (Sample(at=1000, in_flight=None), "holding at 3: in-flight count missing (stale)"),
        (Sample(at=1000, in_flight=math.nan), "in-flight count invalid (nan)"),
        (Sample(at=1000, in_flight=math.inf), "in-flight count invalid (inf)"),
        (Sample(at=1000, in_flight=-1), "in-flight count invalid (-1)"),
        (Sample(at=1000, in_flight=5, held=-2), "held count invalid (-2)"),
        (Sample(at=1000, in_flight=5, ready=-1), "ready count invalid (-1)"),
        (Sample(at=1000, in_flight=5, kv_cache_usage=math.nan), "KV-cache use invalid (nan)"),
        (Sample(at=955, in_flight=5), "holding at 3: no metrics for 45 s (stale)"),
        (Sample(at=1010, in_flight=5), "10 s in the future"),
        (Sample(at=math.nan, in_flight=5), "no valid time"),
    ],
)
def test_bad_or_stale_data_holds(sample, reason):
    # Heavy load in the history must not matter: bad data is never a reason to move.
    d = decide(params(), steady(200, 990), sample, 1000, 3)
    assert (d.replicas, d.action, d.stale, d.window) == (3, "hold", True, "none")
    assert reason in d.reason
    assert d.history == steady(200, 990)


def test_stale_sample_with_zero_load_never_scales_to_zero():
    p = params(min_replicas=0, scale_to_zero_delay_s=0)
    d = decide(p, History(idle_since=0, last_sample_at=0), Sample(at=0, in_flight=0), 100, 1)
    assert (d.replicas, d.stale) == (1, True)


def test_sample_older_than_the_last_one_used_is_stale():
    d = one(params(), History(last_sample_at=1001), 1002, 2, in_flight=0)
    d = decide(params(), History(last_sample_at=1001), Sample(at=1000, in_flight=0), 1002, 2)
    assert d.stale and "older than the one used before" in d.reason


def test_clock_going_backwards_resets_the_windows_and_holds():
    h = History(samples=((990, 5.0), (1000, 5.0)), low_since=700, last_sample_at=1000)
    d = one(params(), h, 500, 4, in_flight=0)
    assert (d.replicas, d.action, d.stale) == (4, "hold", True)
    assert "clock went back 500 s" in d.reason
    assert d.history == History()
    # The next call starts afresh: the scale-down delay is measured from now, not from 700.
    d = one(params(), d.history, 502, 4, in_flight=0, ready=4)
    assert d.action == "hold" and d.history.low_since == 502


def test_invalid_now_holds():
    d = decide(params(), History(), Sample(at=0, in_flight=1), math.nan, 2)
    assert (d.replicas, d.stale) == (2, True)
    d = decide(params(), History(), Sample(at=0, in_flight=1), math.nan, 50)
    assert (d.replicas, d.stale) == (10, True)
    assert History.from_json(d.history.to_json()) == d.history


@pytest.mark.parametrize(
    ("current", "expected", "action"),
    [(15, 10, "scale-down"), (0, 1, "scale-from-zero"), (-3, 1, "scale-from-zero")],
)
def test_bounds_apply_even_on_bad_data(current, expected, action):
    d = decide(params(), History(), None, 100, current)
    assert (d.replicas, d.action, d.stale) == (expected, action, True)
    assert "Replicas is" in d.reason


# ----- the windows ------------------------------------------------------------------------------


def test_panic_window_reacts_to_a_burst_with_the_issue_s_example_reason():
    d = one(params(), steady(20, 990), 1000, 2, in_flight=78, ready=2)
    assert (d.replicas, d.action, d.window, d.stale) == (5, "scale-up", "panic", False)
    assert d.reason == "scaled 2 -> 5: 78 in flight, target 16 per replica (panic window)"
    assert d.history.panic_until == 1060


def test_scale_up_is_bounded_by_the_step():
    d = one(params(max_scale_up_step=2), steady(300, 990), 1000, 1, in_flight=300, ready=1)
    assert (d.replicas, d.action) == (3, "scale-up")


def test_scale_up_is_bounded_by_max():
    d = one(params(max_replicas=3), steady(300, 990), 1000, 3, in_flight=300, ready=3)
    assert (d.replicas, d.action) == (3, "hold")
    assert "maxReplicas is 3" in d.reason


def test_stable_window_drives_moderate_growth():
    # 40 in flight at 2 replicas of 16 wants 3; not 2x the ready count, so no panic.
    d = one(params(), steady(40, 990), 1000, 2, in_flight=40, ready=2)
    assert (d.replicas, d.action, d.window) == (3, "scale-up", "stable")


def test_stable_window_mean_ignores_a_single_spike_below_panic():
    d = one(params(), steady(16, 998), 1000, 2, in_flight=60, ready=2)
    assert (d.replicas, d.action) == (2, "hold")


def test_no_scale_down_in_panic():
    h = History(
        samples=((995.0, 100.0),),
        panic_until=1050,
        low_since=None,
        last_sample_at=995,
    )
    d = one(params(scale_down_delay_s=0), h, 1000, 6, in_flight=0, ready=6)
    assert (d.replicas, d.action, d.window) == (6, "hold", "panic")


def test_panic_ends_after_the_stable_window():
    h = History(panic_until=1000.0, last_sample_at=998)
    d = one(params(), h, 1000, 6, in_flight=80, ready=6)
    assert d.history.panic_until is None and d.window == "stable"


def test_starting_replicas_count_as_capacity_on_the_way():
    # 64 in flight wants 4; 2 ready + 2 starting are already 4.
    d = one(params(), steady(64, 990), 1000, 4, in_flight=64, ready=2, starting=2)
    assert (d.replicas, d.action) == (4, "hold")


def test_time_to_ready_sizes_the_scale_up_from_the_queue_growth():
    # Load grows 1 per second: 60 s from now it will be ~60 more, so 3 replicas are not enough.
    samples = tuple((940.0 + 2 * i, 20.0 + 2 * i) for i in range(30))
    h = History(samples=samples, last_sample_at=998)
    without = one(params(), h, 1000, 2, in_flight=80, ready=2)
    with_ttr = one(params(time_to_ready_s=60), h, 1000, 2, in_flight=80, ready=2)
    assert with_ttr.replicas > without.replicas
    assert "projected in flight" in with_ttr.reason


def test_time_to_ready_ignores_a_load_the_replicas_carry():
    # The load wanders up inside what 4 replicas carry (64): no queue, nothing to project.
    samples = tuple((940.0 + 2 * i, 30.0 + i) for i in range(30))
    h = History(samples=samples, last_sample_at=998)
    d = one(params(time_to_ready_s=180), h, 1000, 4, in_flight=60, ready=4)
    assert (d.replicas, d.action) == (4, "hold")


def test_noise_is_not_growth():
    # A saw-tooth around 40 has a least-squares slope near zero and an R^2 near zero.
    samples = tuple((940.0 + 2 * i, 40.0 + (6 if i % 2 else -6)) for i in range(30))
    h = History(samples=samples, last_sample_at=998)
    d = one(params(time_to_ready_s=600), h, 1000, 2, in_flight=46, ready=2)
    assert "projected" not in d.reason


def test_a_burst_that_is_over_does_not_scale_up_from_the_stable_mean():
    # The stable mean (60 s) still holds a burst; the panic window (6 s) shows it is over.
    samples = tuple((940.0 + 2 * i, 200.0 if i < 10 else 10.0) for i in range(30))
    h = History(samples=samples, last_sample_at=998)
    d = one(params(), h, 1000, 2, in_flight=10, ready=2)
    assert (d.replicas, d.action) == (2, "hold")


@pytest.mark.parametrize(
    ("ready", "starting", "expected"),
    [(2, 0, 6), (2, 3, 6), (2, 4, 6), (8, 0, 12), (8, 6, 16), (8, 8, 16)],
)
def test_scale_ups_on_their_way_count(ready, starting, expected):
    # With a start-up time known, at most max(step, ready) replicas start at once.
    p = params(max_replicas=40, time_to_ready_s=60)
    current = ready + starting
    d = one(p, steady(600, 990), 1000, current, in_flight=600, ready=ready, starting=starting)
    assert d.replicas == max(expected, current)


def test_time_to_ready_never_shrinks_a_decision():
    samples = tuple((940.0 + 2 * i, 100.0 - 2 * i) for i in range(30))
    h = History(samples=samples, last_sample_at=998)
    a = one(params(), h, 1000, 2, in_flight=40, ready=2)
    b = one(params(time_to_ready_s=600), h, 1000, 2, in_flight=40, ready=2)
    assert a.replicas == b.replicas


def test_kv_cache_saturation_asks_for_one_more_replica():
    d = one(params(), steady(10, 990), 1000, 2, in_flight=10, ready=2, kv_cache_usage=0.93)
    assert (d.replicas, d.action) == (3, "scale-up")
    assert "KV cache 93% full" in d.reason
    # The sample counts as full capacity in the window.
    assert d.history.samples[-1] == (1000, 32)


def test_kv_cache_saturation_is_satisfied_by_a_starting_replica():
    d = one(
        params(), steady(10, 990), 1000, 3, in_flight=10, ready=2, starting=1, kv_cache_usage=0.93
    )
    assert (d.replicas, d.action) == (3, "hold")


# ----- scale-down --------------------------------------------------------------------------------


def test_scale_down_waits_for_the_delay_then_goes_to_the_most_it_wanted_in_it():
    # Wanted 5 from 700, 4 from 800, 3 from 950; 6 replicas: at 1000 the delay (300 s) has seen
    # 5 at its start, so the count goes to 5, not 3 (HPA's stabilisation window).
    h = History(
        samples=((998.0, 40.0),),
        low_since=700,
        recent_wants=((700.0, 5), (800.0, 4), (950.0, 3)),
        last_sample_at=998,
    )
    p = params(stable_window_s=10, panic_window_s=2, stale_after_s=1000)  # sparse calls
    early = one(p, h, 999, 6, in_flight=40, ready=6)
    assert (early.replicas, early.action) == (6, "hold")
    assert "wants 3 for 299 s of the 300 s scale-down delay" in early.reason
    d = one(p, h, 1000, 6, in_flight=40, ready=6)
    assert (d.replicas, d.action) == (5, "scale-down")
    assert (
        d.reason == "scaled 6 -> 5: 40 in flight for 300 s, target 16 per replica (stable window)"
    )
    # A step down restarts the delay: the next one waits for 300 s seen at 5 replicas, then
    # goes to the most wanted in them (3).
    assert d.history.low_since == 1000
    d = one(p, d.history, 1299, 5, in_flight=40, ready=5)
    assert d.action == "hold"
    assert "wants 3 for 299 s of the 300 s scale-down delay" in d.reason
    d = one(p, d.history, 1300, 5, in_flight=40, ready=5)
    assert (d.replicas, d.action) == (3, "scale-down")


def test_a_step_down_removes_at_most_half_the_replicas():
    h = History(samples=((999.0, 0.0),), low_since=0, recent_wants=((0, 1),), last_sample_at=999)
    d = one(params(max_replicas=20), h, 1000, 13, in_flight=0, ready=13)
    assert (d.replicas, d.action) == (7, "scale-down")
    d = one(params(max_replicas=20, max_scale_down_rate=4), h, 1000, 13, in_flight=0, ready=13)
    assert (d.replicas, d.action) == (4, "scale-down")
    # Whatever the rate, a step removes at least one (ceil(2 / 1.5) is 2).
    d = one(params(max_scale_down_rate=1.5), h, 1000, 2, in_flight=0, ready=2)
    assert (d.replicas, d.action) == (1, "scale-down")
    d = one(params(max_scale_down_rate=1), h, 1000, 5, in_flight=0, ready=5)
    assert (d.replicas, d.action) == (4, "scale-down")


def test_recurring_bursts_keep_their_replicas_through_the_delay():
    # Target 4: a 6 s burst of 24 in flight every 100 s, nothing in between. The stable mean
    # (about 2.4) wants 1 replica; the bursts' peaks want 6. The count stays at 6 while the
    # bursts recur, and steps down only once a whole delay has passed without one.
    p = params(target_in_flight_per_replica=4, max_replicas=20)
    h, current = History(), 6
    counts = []
    for i in range(1, 1000):
        t = 2.0 * i
        burst = t < 1000 and t % 100 < 6
        d = one(p, h, t, current, in_flight=24 if burst else 0, ready=current)
        h, current = d.history, d.replicas
        counts.append((t, current))
    # The last burst ends at 904: the first step down comes a delay later, by at most half.
    assert all(n == 6 for t, n in counts if t < 1200)
    assert all(3 <= n < 6 for t, n in counts if 1210 <= t < 1500)


def test_the_wander_of_a_steady_load_is_not_a_peak_to_keep():
    # Target 8: in flight wanders 76..92 around 84 (6 s means of a steady load). The peaks
    # want 12 now and then, the stable mean 11; a burst would want twice that. Starting at
    # 14, the count comes down to what the mean wants instead of holding 12 for ever.
    p = params(target_in_flight_per_replica=8, max_replicas=40)
    h, current = History(), 14
    wander = (76, 84, 92, 84)
    for i in range(1, 1200):
        t = 2.0 * i
        d = one(p, h, t, current, in_flight=wander[(i // 3) % 4], ready=current)
        h, current = d.history, d.replicas
    assert current == 11


def test_a_hold_on_the_peaks_says_so():
    p = params(target_in_flight_per_replica=4, panic_window_s=6, stable_window_s=60)
    samples = tuple((940.0 + 2 * i, 0.0) for i in range(28)) + ((996.0, 16.0), (998.0, 16.0))
    h = History(samples=samples, last_sample_at=998)
    d = one(p, h, 1000, 4, in_flight=16, ready=4)
    assert (d.replicas, d.action) == (4, "hold")
    assert d.reason.endswith("; its peaks (panic window) want 4")


def test_a_falling_load_steps_down_along_the_sliding_maximum():
    p = params(max_replicas=20)
    h, current, t = steady(200, 1000), 13, 1000.0
    moves = []
    for _ in range(600):
        t += 2
        d = one(p, h, t, current, in_flight=40, ready=current)
        h, current = d.history, d.replicas
        if d.action != "hold":
            moves.append((t, d.replicas))
    # Nothing before the delay; at most half at a time, each step a whole delay after the last
    # (seen at the new count); ends where the load wants it.
    assert moves[0][0] >= 1300 and current == 3
    assert [n for _, n in moves] == [12, 6, 3]
    assert all(b - a >= 300 for (a, _), (b, _) in zip(moves, moves[1:], strict=False))


def test_scale_down_never_while_a_replica_is_starting():
    h = History(samples=((999.0, 0.0),), low_since=0, recent_wants=((0, 1),), last_sample_at=999)
    d = one(params(), h, 1000, 4, in_flight=0, ready=3, starting=1)
    assert (d.replicas, d.action) == (4, "hold")
    assert "still starting" in d.reason


def test_scale_down_never_below_min():
    h = History(samples=((999.0, 0.0),), low_since=0, recent_wants=((0, 0),), last_sample_at=999)
    d = one(params(min_replicas=2), h, 1000, 3, in_flight=0, ready=3)
    assert (d.replicas, d.action) == (2, "scale-down")


def test_a_gap_in_observations_restarts_the_delays():
    h = History(samples=(), low_since=0, recent_wants=((0, 1),), last_sample_at=500)
    d = one(params(), h, 1000, 4, in_flight=0, ready=4)
    assert d.action == "hold" and d.history.low_since == 1000


# ----- zero ---------------------------------------------------------------------------------------


def zero_params(**kw) -> PolicyParams:
    return params(min_replicas=0, scale_to_zero_delay_s=600, **kw)


def test_scale_to_zero_after_the_idle_delay():
    h = History(samples=((999.0, 0.0),), idle_since=400, last_sample_at=999)
    d = one(zero_params(), h, 1000, 1, in_flight=0, ready=1)
    assert (d.replicas, d.action) == (0, "scale-to-zero")
    assert d.reason == "scaled 1 -> 0: idle for 600 s"


def test_no_scale_to_zero_before_the_idle_delay():
    h = History(samples=((999.0, 0.0),), idle_since=401, last_sample_at=999)
    d = one(zero_params(), h, 1000, 1, in_flight=0, ready=1)
    assert (d.replicas, d.action) == (1, "hold")


def test_no_scale_to_zero_without_a_delay_configured():
    p = params(min_replicas=0)
    h = History(
        samples=((999.0, 0.0),),
        idle_since=0,
        low_since=0,
        recent_wants=((0, 0),),
        last_sample_at=999,
    )
    d = one(p, h, 1000, 1, in_flight=0, ready=1)
    assert (d.replicas, d.action) == (1, "hold")


def test_held_requests_are_not_idle():
    h = History(samples=((999.0, 0.0),), idle_since=0, last_sample_at=999)
    d = one(zero_params(), h, 1000, 1, in_flight=0, held=1, ready=0, starting=1)
    assert d.replicas == 1 and d.history.idle_since is None


@pytest.mark.parametrize(("held", "expected"), [(1, 1), (16, 1), (17, 2), (50, 4), (500, 10)])
def test_scale_from_zero_at_once_to_what_the_held_queue_needs(held, expected):
    d = one(zero_params(max_scale_up_step=1), History(), 1000, 0, in_flight=0, held=held)
    assert (d.replicas, d.action, d.window) == (expected, "scale-from-zero", "none")
    assert f"{held} waiting for a replica" in d.reason


def test_zero_stays_zero_without_load():
    d = one(zero_params(), History(), 1000, 0, in_flight=0)
    assert (d.replicas, d.action) == (0, "hold")


# ----- History JSON ---------------------------------------------------------------------------


def test_history_round_trips_through_json():
    h = History(
        samples=((1.5, 2.0), (3.0, 4.25)),
        panic_until=10.0,
        low_since=2.0,
        idle_since=None,
        last_change_at=1.0,
        recent_wants=((1.0, 3), (2.5, 2)),
        last_sample_at=3.0,
    )
    assert History.from_json(h.to_json()) == h
    assert History.from_json(History().to_json()) == History()


def test_history_ignores_unknown_keys():
    assert History.from_json('{"samples": [], "from_the_future": 1}') == History()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        "3",
        '{"samples": 5}',
        '{"samples": [[1]]}',
        '{"samples": [[1, "x"]]}',
        '{"samples": [[1, -2]]}',
        '{"samples": [[5, 1], [1, 1]]}',
        '{"samples": [[NaN, 1]]}',
        '{"panic_until": "soon"}',
        '{"low_since": Infinity}',
        '{"recent_wants": [[1, true]]}',
        '{"recent_wants": [[1, -1]]}',
        '{"recent_wants": [[1, 1.5]]}',
        '{"recent_wants": {}}',
        "[" * 100_000,
    ],
)
def test_history_garbage_is_a_value_error(text):
    with pytest.raises(ValueError):
        History.from_json(text)


# ----- properties over whole runs -----------------------------------------------------------------


class World:
    """Replicas that become ready ``ready_after`` seconds after the policy asks for them."""

    def __init__(self, p: PolicyParams, current: int, ready_after: float) -> None:
        self.p = p
        self.current = current
        self.ready_after = ready_after
        self.started: list[float] = [-1e9] * current
        self.history = History()

    def tick(self, now: float, in_flight: float, held: int = 0) -> Decision:
        ready = sum(1 for s in self.started if now - s >= self.ready_after)
        sample = Sample(
            at=now, in_flight=in_flight, held=held, ready=ready, starting=self.current - ready
        )
        d = decide(self.p, self.history, sample, now, self.current)
        self.history = History.from_json(d.history.to_json())  # as the operator persists it
        if d.replicas > self.current:
            self.started += [now] * (d.replicas - self.current)
        else:
            self.started = sorted(self.started)[: d.replicas]  # the oldest (ready) stay
        self.current = d.replicas
        return d


param_sets = st.builds(
    PolicyParams,
    min_replicas=st.integers(0, 3),
    max_replicas=st.integers(3, 20),
    target_in_flight_per_replica=st.sampled_from([1, 4, 16, 32.5]),
    stable_window_s=st.sampled_from([10, 60]),
    panic_window_s=st.sampled_from([2, 6]),
    max_scale_up_step=st.integers(1, 5),
    scale_down_delay_s=st.sampled_from([0, 30, 300]),
    time_to_ready_s=st.sampled_from([None, 30, 180]),
    max_scale_down_rate=st.sampled_from([1, 1.5, 2.0, 4.0]),
)

samples_or_garbage = st.one_of(
    st.none(),
    st.builds(
        dict,
        in_flight=st.one_of(
            st.none(),
            st.floats(min_value=-5, max_value=1000),
            st.just(math.nan),
            st.integers(0, 500).map(float),
        ),
        held=st.integers(-1, 50),
        kv_cache_usage=st.one_of(st.none(), st.floats(0, 1), st.just(math.nan)),
        ready=st.integers(0, 25),
        starting=st.integers(0, 5),
        lag=st.sampled_from([0, 1, 5, 40]),
        dt=st.sampled_from([2, 2, 2, 15, -30]),
    ),
)


@settings(max_examples=200, deadline=None)
@given(p=param_sets, start=st.integers(0, 40), steps=st.lists(samples_or_garbage, max_size=60))
def test_bounds_are_always_respected(p, start, steps):
    history, current, now = History(), start, 10_000.0
    for step in steps:
        if step is None:
            sample = None
        else:
            now += step["dt"]
            sample = Sample(
                at=now - step["lag"],
                in_flight=step["in_flight"],
                held=step["held"],
                kv_cache_usage=step["kv_cache_usage"],
                ready=step["ready"],
                starting=step["starting"],
            )
        d = decide(p, history, sample, now, current)
        assert p.min_replicas <= d.replicas <= p.max_replicas
        assert d.current == max(current, 0)
        assert (d.action == "hold") == (d.replicas == d.current)
        history, current = History.from_json(d.history.to_json()), d.replicas


@settings(max_examples=150, deadline=None)
@given(
    p=param_sets,
    start=st.integers(0, 20),
    load=st.one_of(st.just(0.0), st.floats(0.5, 400)),
    ready_after=st.sampled_from([0, 10, 60]),
)
def test_no_oscillation_under_a_constant_load(p, start, load, ready_after):
    world = World(p, p.clamp(start), ready_after)
    counts = [world.current]
    # Long enough for every step down (each a whole delay after the last) and then 200 ticks.
    steps, c = 0, world.current
    while c > 1:
        c, steps = min(math.ceil(c / p.max_scale_down_rate - 1e-9), c - 1), steps + 1
    for i in range(1, 600 + steps * int(p.scale_down_delay_s / 2 + 10)):
        counts.append(world.tick(i * 2.0, load).replicas)
    changes = [b - a for a, b in zip(counts, counts[1:], strict=False) if b != a]
    # Monotone: every move goes the same way (up in steps, or down once the delay is over).
    assert all(c > 0 for c in changes) or all(c < 0 for c in changes)
    # And settled: the last stretch (longer than every delay and window) has no move at all.
    assert len(set(counts[-200:])) == 1
    # And where the load wants it (param_sets never scale to zero: idle rests on the floor).
    if load > 0:
        assert counts[-1] == p.clamp(p.wanted(load))
    elif counts[0] > 0:
        assert counts[-1] == max(p.min_replicas, 1)


@settings(max_examples=150, deadline=None)
@given(
    p=param_sets,
    ready=st.integers(1, 3),
    factor=st.floats(2.0, 10.0),
)
def test_a_step_up_gets_a_scale_up_inside_the_panic_window(p, ready, factor):
    current = p.clamp(ready)
    if current >= p.max_replicas or current == 0:
        return
    world = World(p, current, 0)
    target = p.target_in_flight_per_replica
    for i in range(int(p.stable_window_s) + 1):
        world.tick(float(i), target * current)  # exactly what `current` replicas carry
    assert world.current == current
    step_at = p.stable_window_s + 1
    high = factor * target * current
    ups = []
    t = step_at
    while t <= step_at + p.panic_window_s:
        d = world.tick(t, high)
        if d.action == "scale-up":
            ups.append(d)
        t += 1.0
    assert ups, "no scale-up inside the panic window"


@settings(max_examples=200, deadline=None)
@given(
    delay=st.sampled_from([0, 30, 600]),
    loads=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 2), st.sampled_from([2, 2, 2, 20, 200])),
        min_size=1,
        max_size=120,
    ),
)
def test_idle_reaches_zero_only_after_the_delay_and_never_while_held(delay, loads):
    p = params(min_replicas=0, max_replicas=5, scale_to_zero_delay_s=delay, scale_down_delay_s=0)
    world = World(p, 1, 5)
    now = 0.0
    last_busy: float | None = 0.0  # a replica exists from the start: treat t=0 as busy
    for in_flight, held, dt in loads:
        now += dt
        before = world.current
        d = world.tick(now, in_flight, held)
        if in_flight or held:
            last_busy = now
        if d.action == "scale-to-zero":
            assert before > 0 and in_flight == 0 and held == 0
            assert last_busy is not None and now - last_busy >= delay
        if held and before == 0:
            assert d.replicas >= 1 and d.action == "scale-from-zero"


@settings(max_examples=200, deadline=None)
@given(
    p=param_sets,
    warmup=st.lists(st.floats(0, 300), min_size=1, max_size=40),
    bad=st.sampled_from(["none", "nan", "negative", "missing", "old", "future"]),
    current=st.integers(0, 20),
)
def test_stale_data_never_scales_down(p, warmup, bad, current):
    world = World(p, p.clamp(current), 0)
    now = 0.0
    for load in warmup:
        now += 2
        world.tick(now, load)
    now += 2
    sample = {
        "none": None,
        "nan": Sample(at=now, in_flight=math.nan),
        "negative": Sample(at=now, in_flight=-4),
        "missing": Sample(at=now, in_flight=None),
        "old": Sample(at=now - p.stale_after_s - 1, in_flight=0),
        "future": Sample(at=now + 5, in_flight=0),
    }[bad]
    d = decide(p, world.history, sample, now, world.current)
    assert d.stale and d.replicas == world.current and d.action == "hold"


# ----- work, not requests ------------------------------------------------------------------------


def test_prompt_tokens_waiting_size_the_fleet_where_the_request_count_does_not():
    # 15 requests of 15k tokens: under one replica's target of 16 requests, but 225k prompt
    # tokens waiting is 9 replicas' worth of prefill at 25k tokens per replica within the SLO.
    p = params(prompt_tokens_per_replica=25_000)
    history = steady(15 * 16 / 2, 990)  # the window already held the work (as requests)
    d = one(p, history, 1000, 2, in_flight=15, ready=2, pending_prompt_tokens=225_000)
    assert d.action == "scale-up"
    assert (d.desired, d.replicas) == (9, 6)  # 225k / 25k, by the step of 4
    assert "225000 prompt tokens waiting" in d.reason


def test_short_prompts_size_on_requests_as_before():
    p = params(prompt_tokens_per_replica=25_000)
    with_tokens = one(p, steady(40, 990), 1000, 2, in_flight=40, ready=2, pending_prompt_tokens=800)
    without = one(params(), steady(40, 990), 1000, 2, in_flight=40, ready=2)
    assert (with_tokens.replicas, with_tokens.reason) == (without.replicas, without.reason)


@pytest.mark.parametrize("tokens", [None, math.nan, -5.0, math.inf])
def test_unknown_or_bad_token_counts_fall_back_to_requests(tokens):
    p = params(prompt_tokens_per_replica=25_000)
    d = one(p, steady(40, 990), 1000, 2, in_flight=40, ready=2, pending_prompt_tokens=tokens)
    assert (d.replicas, d.action, d.stale) == (3, "scale-up", False)
    assert "prompt tokens" not in d.reason


def test_tokens_without_a_per_replica_figure_are_ignored():
    d = one(params(), steady(10, 990), 1000, 2, in_flight=10, ready=2, pending_prompt_tokens=1e9)
    assert d.action == "hold"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learned_floor_quantile": 0}, "learned_floor_quantile"),
        ({"learned_floor_quantile": 1.5}, "learned_floor_quantile"),
        ({"learned_floor_quantile": math.nan}, "learned_floor_quantile"),
        ({"learned_floor_half_life_s": 0}, "learned_floor_half_life_s"),
        ({"learned_floor_bucket_s": -1}, "learned_floor_bucket_s"),
    ],
)
def test_absurd_floor_params_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        params(**overrides)


@pytest.mark.parametrize("peaks", ['"x"', "[[1, -2]]", "[[1]]", "[[1, true]]", '[["a", 1]]'])
def test_history_with_bad_peaks_is_refused(peaks):
    with pytest.raises(ValueError, match="history.peaks"):
        History.from_json('{"peaks": ' + peaks + "}")
