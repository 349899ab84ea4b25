"""The simulated cluster and the policies in it: small synthetic traces with known answers."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from inferscale.sim.presets import preset
from inferscale.whatif.cluster import REJECTED, SERVED, SPILLED, SimConfig, simulate
from inferscale.whatif.compare import (
    MAX_PROMPT_TOKEN_BUDGET,
    best_fixed_fleet,
    build_policy,
    calibrate_target,
    compare,
    fixed_fleet_attainment,
    initial_replicas,
    oracle_for,
    prompt_token_budget,
)
from inferscale.whatif.policies import (
    HpaLike,
    KedaLike,
    KubeAiLike,
    Scrape,
    Static,
    spilled_token_share,
)
from inferscale.whatif.report import gpu_hours, quantile, render_table, summarize, to_json
from inferscale.whatif.trace import Request, Trace

H100 = preset("llama-3.1-8b-h100")
L4 = preset("llama-3.1-8b-l4")


def steady(rate: float, seconds: float, prompt: int = 200, output: int = 20) -> Trace:
    n = int(rate * seconds)
    return Trace("steady", "azure", tuple(Request(i / rate, prompt, output) for i in range(n)))


def config(**kw) -> SimConfig:
    base = {"engine": H100, "cold_start_s": 30.0, "max_replicas": 8}
    base.update(kw)
    return SimConfig(**base)


@pytest.mark.parametrize("name", ["ours", "hpa", "keda", "kubeai", "fixed", "oracle"])
def test_a_light_constant_load_is_served_within_the_slo_by_one_replica(name):
    trace = steady(1.0, 600)
    cfg = config(initial_replicas=1)
    result = simulate(trace, build_policy(name, trace, cfg), cfg)
    s = summarize(result)
    assert s.slo_attainment == 1.0 and s.unfinished == 0
    assert s.ttft_p99 < 0.2
    assert s.peak_replicas == 1 and s.cold_starts == 0
    assert s.gpu_hours == pytest.approx(trace.span / 3600, rel=1e-6)


def test_the_oracle_never_uses_more_gpu_hours_than_the_load_needs():
    # Two busy minutes around ten idle ones: the oracle keeps replicas only around the busy
    # parts (plus a cold start ahead), never the whole span.
    busy = [Request(t * 0.05, 2000, 200) for t in range(2400)]  # 20/s for 120 s
    later = [Request(840 + t * 0.05, 2000, 200) for t in range(2400)]
    trace = Trace("two-bursts", "azure", tuple(busy + later))
    cfg = config(min_replicas=0, target=8.0, max_replicas=20)
    cfg = replace(cfg, initial_replicas=initial_replicas(trace, cfg))
    oracle = simulate(trace, oracle_for(trace, cfg), cfg)
    static_peak = simulate(trace, Static(summarize(oracle).peak_replicas), cfg)
    assert gpu_hours(oracle) < 0.6 * gpu_hours(static_peak)
    # And it never holds more than the foreseen need over [t, t + cold start].
    need = oracle_for(trace, cfg)
    for point in oracle.timeline:
        assert point.replicas <= max(need.wanted_at(point.at), need.wanted_at(point.at - 2.0))


def test_same_inputs_give_the_same_figures():
    trace = steady(6.0, 300, prompt=1500, output=150)
    cfg = config(initial_replicas=1, target=8.0)
    first = [summarize(r) for r in compare(trace, cfg, ["ours", "keda", "oracle"])]
    second = [summarize(r) for r in compare(trace, cfg, ["ours", "keda", "oracle"])]
    assert first == second
    assert render_table(first) == render_table(second)


def test_scale_from_zero_holds_the_first_request_for_about_a_cold_start():
    trace = Trace("one", "azure", (Request(0.0, 10, 5), Request(100.0, 100, 5)))
    cfg = config(min_replicas=0, initial_replicas=0, cold_start_s=30.0)
    result = simulate(trace, build_policy("ours", trace, cfg), cfg)
    # The first request waits for a replica: the next scrape (<= 2 s), one scrape of lag
    # (2 s), then the cold start.
    assert 30.0 <= result.ttft[0] <= 35.0
    assert result.outcome == [SERVED, SERVED]
    assert result.cold_starts == 1


def test_kubeai_scales_from_zero_when_its_proxy_holds_a_request():
    trace = Trace("one", "azure", (Request(1.0, 10, 5), Request(100.0, 100, 5)))
    cfg = config(min_replicas=0, initial_replicas=0, cold_start_s=30.0)
    result = simulate(trace, build_policy("kubeai", trace, cfg), cfg)
    assert 30.0 <= result.ttft[0] <= 30.5


def test_spillover_serves_cold_starts_at_the_provider():
    trace = Trace("one", "azure", (Request(0.0, 1000, 50), Request(60.0, 100, 5)))
    cfg = config(min_replicas=0, initial_replicas=0, spillover=True, cold_start_s=30.0)
    result = simulate(trace, build_policy("ours", trace, cfg), cfg)
    assert result.outcome == [SPILLED, SERVED]
    s = summarize(result)
    assert s.slo_attainment == 1.0 and s.spilled_requests == 1
    assert s.spilled_tokens_pct == pytest.approx(100 * 1050 / 1155)
    assert s.cost == pytest.approx(s.gpu_hours + 1000 / 1e6 * 0.5 + 50 / 1e6 * 1.5)


def test_least_prefill_sends_a_short_request_past_a_long_prefill():
    # A 6,000-token prompt takes about 2 s to prefill on an L4. Request 3 finds one request
    # in flight at the replica prefilling it and two short ones at the other: leastInFlight
    # puts it behind the long prompt, leastPrefill beside the short ones.
    short = [Request(0.01 * i, 100, 10) for i in (1, 2, 3)]
    trace = Trace("mixed", "azure", (Request(0.0, 6000, 10), *short))
    ttft = {}
    for strategy in ("leastInFlight", "leastPrefill"):
        cfg = config(engine=L4, initial_replicas=2, strategy=strategy)
        ttft[strategy] = simulate(trace, Static(2), cfg).ttft
    assert ttft["leastInFlight"][3] > 1.5
    assert ttft["leastPrefill"][3] < 0.5
    assert ttft["leastPrefill"][0] == pytest.approx(ttft["leastInFlight"][0])


def test_spillover_on_prompt_tokens_waiting_for_a_first_token():
    trace = Trace(
        "t",
        "azure",
        (
            Request(0.0, 3000, 10),  # served: nothing queued
            Request(0.01, 3000, 10),  # 3,000 queued + 3,000 > 4,000: spilled
            Request(0.02, 500, 10),  # 3,000 + 500 fits: served
            Request(0.03, 4500, 10),  # longer than the bound on its own: spilled
            Request(10.0, 3000, 10),  # the queue is long gone: served
        ),
    )
    cfg = config(
        engine=L4,
        initial_replicas=1,
        spillover=True,
        spill_in_flight_per_replica=100,
        spill_prompt_tokens_per_replica=4000,
    )
    result = simulate(trace, Static(1), cfg)
    assert result.outcome == [SERVED, SPILLED, SERVED, SPILLED, SERVED]
    off = simulate(trace, Static(1), replace(cfg, spill_prompt_tokens_per_replica=None))
    assert off.outcome == [SERVED] * 5


def test_prompt_token_budget_is_the_slo_times_the_prefill_rate_with_headroom():
    assert prompt_token_budget(L4, 2.0) == 4848
    assert prompt_token_budget(H100, 1.0) == 20_000
    assert prompt_token_budget(preset("zero"), 2.0) == MAX_PROMPT_TOKEN_BUDGET


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("strategy", "prefixHash", "not simulated"),
        ("spill_prompt_tokens_per_replica", 0, "must be >= 1"),
    ],
)
def test_config_refuses_what_it_cannot_simulate(field, value, message):
    with pytest.raises(ValueError, match=message):
        config(**{field: value})


def test_requests_the_engine_cannot_take_are_left_out():
    too_long = H100.max_model_len + 1
    trace = Trace("t", "azure", (Request(0.0, too_long, 1), Request(1.0, 10, 2)))
    cfg = config(initial_replicas=1)
    result = simulate(trace, build_policy("ours", trace, cfg), cfg)
    assert result.outcome[0] == REJECTED
    s = summarize(result)
    assert (s.rejected, s.slo_attainment) == (1, 1.0)


def test_an_overload_scales_up_and_misses_are_counted():
    # 30 req/s of 2000-token prompts need several H100s; one replica to start with.
    trace = steady(30.0, 400, prompt=2000, output=100)
    cfg = config(initial_replicas=1, target=8.0, max_replicas=10)
    ours = summarize(simulate(trace, build_policy("ours", trace, cfg), cfg))
    static = summarize(simulate(trace, Static(1), cfg))
    assert ours.peak_replicas > 1 and ours.cold_starts >= 1
    assert ours.slo_attainment > static.slo_attainment
    assert static.slo_attainment < 0.5 and math.isfinite(static.ttft_p50)


def test_json_has_no_nan():
    trace = Trace("t", "azure", (Request(0.0, H100.max_model_len + 1, 1),))
    cfg = config(initial_replicas=1)
    s = summarize(simulate(trace, build_policy("ours", trace, cfg), cfg))
    text = to_json([s], {"trace": "t"})
    assert "NaN" not in text and '"ttft_p50": null' in text


def test_calibration_picks_a_target_the_oracle_meets():
    trace = steady(20.0, 200, prompt=2000, output=100)
    cfg = config(max_replicas=12)
    target = calibrate_target(trace, cfg)
    trial = replace(cfg, target=float(target))
    trial = replace(trial, initial_replicas=initial_replicas(trace, trial))
    assert summarize(simulate(trace, oracle_for(trace, trial), trial)).slo_attainment >= 0.99


def test_the_best_fixed_fleet_is_the_fewest_standing_replicas_that_meet_the_goal():
    # A steady load that one H100 cannot carry within the SLO, plus a burst on top.
    base = steady(12.0, 300, prompt=3000, output=50)
    burst = tuple(Request(150 + i / 40, 3000, 50) for i in range(400))
    trace = Trace("burst", "azure", tuple(sorted(base.requests + burst, key=lambda r: r.arrival)))
    cfg = config(max_replicas=12)
    best = best_fixed_fleet(trace, cfg)
    assert 1 < best < 12
    assert fixed_fleet_attainment(trace, cfg, best) >= 0.99
    assert fixed_fleet_attainment(trace, cfg, best - 1) < 0.99
    (fixed,) = compare(trace, cfg, ["fixed"])
    s = summarize(fixed)
    assert s.peak_replicas == best and s.cold_starts == 0 and s.scale_events == 0
    assert s.slo_attainment == pytest.approx(fixed_fleet_attainment(trace, cfg, best))
    assert s.gpu_hours == pytest.approx(best * gpu_hours(simulate(trace, Static(1), cfg)), rel=0.05)


def test_no_fixed_fleet_within_the_bound_meeting_the_goal_gives_the_bound():
    trace = steady(40.0, 120, prompt=3000, output=50)
    cfg = config(max_replicas=2)
    assert fixed_fleet_attainment(trace, cfg, 2) < 0.99
    assert best_fixed_fleet(trace, cfg) == 2


def test_fixed_n_is_n_replicas_standing():
    trace = steady(12.0, 120, prompt=3000, output=50)
    cfg = config(max_replicas=12)
    two, three = compare(trace, cfg, ["fixed-2", "fixed-3"])
    assert two.policy == "fixed-2" and three.policy == "fixed-3"
    for result, n in ((two, 2), (three, 3)):
        s = summarize(result)
        assert s.peak_replicas == n and s.cold_starts == 0 and s.scale_events == 0
        assert s.slo_attainment == pytest.approx(fixed_fleet_attainment(trace, cfg, n))


@pytest.mark.parametrize("name", ["magic", "fixed-0", "fixed-", "fixed-x", "fixed--1"])
def test_unknown_policy_is_refused(name):
    with pytest.raises(ValueError, match="unknown policy"):
        compare(steady(1, 10), config(), ["ours", name])


def test_quantile_interpolates():
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert quantile([1.0, math.inf], 0.99) == math.inf
    assert math.isnan(quantile([], 0.5))


# ----- the baselines' arithmetic ----------------------------------------------------------------


def scrape(at, in_flight=0, held=0, busy=(), ready=1, starting=0):
    return Scrape(at, in_flight, held, 0, None, busy, ready, starting)


def test_hpa_scales_on_duty_cycle_and_never_below_one():
    hpa = HpaLike(min_replicas=0, max_replicas=10)
    busy = [scrape(t, busy=(True, True), ready=2) for t in range(0, 30, 2)]
    assert hpa.tick(30.0, 2, busy) == 3  # 100 % busy against 80 %: ceil(2 / 0.8)
    idle = [scrape(t, busy=(False, False, False), ready=3) for t in range(30, 400, 2)]
    counts = [hpa.tick(float(t), 3, busy + idle) for t in range(45, 400, 15)]
    assert min(counts) == 1 and counts[0] == 3  # 300 s of stabilisation first


def test_hpa_scale_up_is_limited_to_double_or_four():
    hpa = HpaLike(min_replicas=1, max_replicas=100, target_utilization=0.01)
    busy = [scrape(t, busy=(True,) * 10, ready=10) for t in range(0, 30, 2)]
    assert hpa.tick(30.0, 10, busy) == 20


def test_keda_activates_at_its_poll_and_cools_down_to_zero():
    keda = KedaLike(min_replicas=0, max_replicas=5, target=4)
    assert keda.tick(0.0, 0, [scrape(-2.0)]) == 0
    assert keda.tick(15.0, 0, [scrape(13.0, held=3, ready=0)]) == 0  # not a poll
    assert keda.tick(30.0, 0, [scrape(28.0, held=3, ready=0)]) == 1
    quiet = [scrape(float(t)) for t in range(30, 700, 2)]
    counts = {t: keda.tick(float(t), 1, quiet) for t in range(45, 700, 15)}
    assert counts[315] == 1 and counts[330] == 0  # 300 s after it was last active


def test_kubeai_averages_ten_minutes_and_waits_three_ticks_to_go_down():
    kubeai = KubeAiLike(min_replicas=1, max_replicas=10, target=10)
    assert kubeai.tick(0.0, 1, [scrape(0.0, in_flight=50)]) == 5
    assert kubeai.on_held(1.0, 0) == 1 and kubeai.on_held(1.0, 2) is None
    # Load gone: the 10-minute average falls slowly, each drop waits for 3 ticks.
    counts = [kubeai.tick(float(t), 5, [scrape(float(t))]) for t in range(10, 60, 10)]
    assert counts[:2] == [5, 5]


# ----- the spilled token share ours reads -------------------------------------------------------


class Recorder(Static):
    """Static, keeping the scrapes it was handed (what a policy reads)."""

    seen: tuple[Scrape, ...] = ()

    def tick(self, now, current, scrapes):
        self.seen = tuple(scrapes)
        return self.replicas


def test_scrapes_count_the_spilled_tokens_as_the_routers_counters_do():
    trace = Trace(
        "t",
        "azure",
        (
            Request(0.0, 3000, 10),
            Request(0.01, 3000, 10),  # spilled (prompt tokens waiting): 3,010 tokens
            Request(0.03, 4500, 10),  # spilled: 4,510 tokens
            Request(10.0, 3000, 10),
        ),
    )
    cfg = config(
        engine=L4,
        initial_replicas=1,
        spillover=True,
        spill_in_flight_per_replica=100,
        spill_prompt_tokens_per_replica=4000,
    )
    recorder = Recorder(1, interval=2.0)
    simulate(trace, recorder, cfg)
    last = recorder.seen[-1]
    assert last.spilled_tokens == 3010 + 4510
    # The last scrape (10 s) runs before the last arrival (10 s): three requests arrived.
    assert last.arrived_prompt_tokens + last.arrived_output_tokens == 10530
    share, rate = spilled_token_share(recorder.seen, last)
    assert share == pytest.approx(7520 / 10530)
    assert rate == pytest.approx(10530 / last.at)


def counters(at, arrived, spilled):
    return Scrape(
        at, 0, 0, 0, None, (), 1, 0, arrived_prompt_tokens=arrived, spilled_tokens=spilled
    )


def test_the_share_is_over_the_window_before_the_scrape_and_unknown_without_tokens():
    scrapes = [counters(0, 0, 0), counters(300, 1000, 500), counters(900, 3000, 600)]
    # The window (600 s) before 900 s starts at the scrape of 300 s: 100 of 2,000 spilled.
    assert spilled_token_share(scrapes, scrapes[-1]) == pytest.approx((0.05, 2000 / 600))
    # A run younger than the window: since its first scrape.
    assert spilled_token_share(scrapes, scrapes[1]) == pytest.approx((0.5, 1000 / 300))
    idle = [counters(0, 0, 0), counters(10, 0, 0)]
    assert spilled_token_share(idle, idle[-1]) == (None, None)


def test_ours_reads_the_share_and_keeps_the_spill_within_its_budget_in_tokens():
    # Long prompts that no replica can prefill within the bound spill whatever the requests
    # in flight say: the share reaches ours' sample, whose history then carries it.
    requests = tuple(Request(float(t), 3000 if t % 4 == 0 else 200, 10) for t in range(0, 1200, 1))
    trace = Trace("long", "azure", requests)
    cfg = config(
        engine=L4,
        initial_replicas=2,
        spillover=True,
        spill_prompt_tokens_per_replica=4000,
        gpu_hour_price=0.8,
        spill_price_in=0.5,
        spill_price_out=1.5,
    )
    ours = build_policy("ours", trace, cfg)
    simulate(trace, ours, cfg)
    assert ours.params.cost_mode
    assert ours.history.token_since is not None and ours.history.token_spill[1] > 0
