"""The oracle sized by the SLO, and the Dynamo-like planner: its arithmetic and its runs."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from inferscale.sim.presets import preset
from inferscale.whatif.cluster import SimConfig, simulate
from inferscale.whatif.compare import (
    calibrate_target,
    compare,
    foreseen_load,
    initial_replicas,
    oracle_for,
    sized_by_slo,
)
from inferscale.whatif.policies import (
    DYNAMO_INTERVAL_S,
    DYNAMO_ITL_S,
    DynamoLike,
    Interval,
    Scrape,
    decode_step_seconds,
    decode_tokens_per_second,
    measure,
    planner_itl_s,
    planner_replicas,
    prefill_seconds,
)
from inferscale.whatif.report import summarize
from inferscale.whatif.trace import Request, Trace

H100 = preset("llama-3.1-8b-h100")
L4 = preset("llama-3.1-8b-l4")


def steady(rate: float, seconds: float, prompt: int, output: int, start: float = 0.0) -> Trace:
    n = int(rate * seconds)
    requests = tuple(Request(start + i / rate, prompt, output) for i in range(n))
    return Trace("steady", "azure", requests)


def config(**kw) -> SimConfig:
    base = {"engine": H100, "cold_start_s": 30.0, "max_replicas": 8}
    base.update(kw)
    return SimConfig(**base)


# ----- the oracle sized by the SLO ---------------------------------------------------------------

LONG_PROMPTS = steady(6.0, 240, prompt=6000, output=50)
"""36k prompt tokens a second: more than one H100 prefills within the SLO, about 4 in flight."""


def test_the_oracle_meets_the_slo_whatever_the_target():
    low, high = config(target=1.0), config(target=64.0)
    assert oracle_for(LONG_PROMPTS, low).needed == oracle_for(LONG_PROMPTS, high).needed
    cfg = sized_by_slo(LONG_PROMPTS, high)
    assert cfg.oracle_target == calibrate_target(LONG_PROMPTS, high)
    cfg = replace(cfg, initial_replicas=initial_replicas(LONG_PROMPTS, cfg))
    (oracle,) = compare(LONG_PROMPTS, cfg, ["oracle"])
    assert summarize(oracle).slo_attainment >= 0.99
    # Sized by the target instead (the old rule), it keeps one replica and misses.
    by_target = replace(cfg, oracle_target=64.0, initial_replicas=1)
    (starved,) = compare(LONG_PROMPTS, by_target, ["oracle"])
    assert summarize(starved).peak_replicas == 1
    assert summarize(starved).slo_attainment < 0.9


def test_an_oracle_target_in_the_config_is_reused_without_calibrating():
    cfg = config(oracle_target=2.0)
    assert sized_by_slo(LONG_PROMPTS, cfg) == cfg
    load = foreseen_load(LONG_PROMPTS, cfg)
    assert oracle_for(LONG_PROMPTS, cfg).needed == [math.ceil(x / 2 - 1e-9) for x in load]


def test_a_bad_oracle_target_is_refused():
    with pytest.raises(ValueError, match="oracle_target"):
        config(oracle_target=0.0)


# ----- what a scrape counts -----------------------------------------------------------------------


def test_scrapes_count_arrivals_first_tokens_and_token_gaps():
    trace = steady(2.0, 60, prompt=500, output=21)
    last = run_scrapes(trace, config(initial_replicas=1))[-1]
    arrived = sum(1 for r in trace.requests if r.arrival < last.at)  # scrape first
    assert last.at > 50 and last.arrived == arrived
    assert last.arrived_prompt_tokens == 500 * arrived
    assert last.arrived_output_tokens == 21 * arrived
    # Alone on an H100 a request gets its first token within a step and finishes in 0.2 s.
    assert arrived - 1 <= last.ttft_count <= arrived
    assert 0 < last.ttft_sum / last.ttft_count < 0.1
    assert last.itl_count % 20 == 0 and last.itl_count >= 20 * (arrived - 1)
    assert last.itl_sum / last.itl_count == pytest.approx(
        decode_step_seconds(H100, 1, 510), rel=0.2
    )


def run_scrapes(trace: Trace, cfg: SimConfig) -> list[Scrape]:
    """Every scrape of a run, as a policy sees them."""
    seen: list[Scrape] = []

    class Recorder(DynamoLike):
        def tick(self, now, current, scrapes):
            seen[:] = scrapes
            return current

    simulate(trace, Recorder(H100, 1, 1, interval=2.0), cfg)
    return seen


def scrape(at: float, **kw) -> Scrape:
    base = {
        "in_flight": 0,
        "held": 0,
        "spilled_in_flight": 0,
        "kv_cache_usage": 0.1,
        "busy": (True,),
        "ready": 1,
        "starting": 0,
    }
    base.update(kw)
    return Scrape(at=at, **base)


def test_measure_takes_differences_of_the_counters_and_the_mean_batch():
    start = scrape(0.0, arrived=10, arrived_prompt_tokens=1000, arrived_output_tokens=100)
    inside = [scrape(t, in_flight=8, ready=2) for t in (2.0, 4.0)]
    end = scrape(
        6.0,
        in_flight=2,
        ready=2,
        arrived=40,
        arrived_prompt_tokens=31_000,
        arrived_output_tokens=3100,
        ttft_sum=3.0,
        ttft_count=10,
        itl_sum=2.0,
        itl_count=100,
    )
    last = measure(start, end, [start, *inside, end])
    assert last == Interval(6.0, 30, 1000.0, 100.0, 0.3, 0.02, 3.0)
    quiet = measure(start, replace(end, arrived=10, ttft_count=0, itl_count=0), [start, end])
    assert quiet.requests == 0 and quiet.ttft_s is None and quiet.itl_s is None


# ----- the planner's arithmetic ------------------------------------------------------------------


def test_decode_throughput_is_the_largest_batch_within_the_itl():
    context = 1050.0
    per_seq = H100.decode_seconds_per_seq + H100.decode_seconds_per_context_token * context
    batch = min(math.floor((DYNAMO_ITL_S - H100.step_base_seconds) / per_seq), 400_000 // 1050)
    assert decode_tokens_per_second(H100, DYNAMO_ITL_S, context) == pytest.approx(
        batch / decode_step_seconds(H100, batch, context)
    )
    # A replica slower than the ITL alone still decodes one sequence.
    assert decode_tokens_per_second(L4, 0.05, 100) == pytest.approx(
        1 / decode_step_seconds(L4, 1, 100)
    )
    assert planner_itl_s(H100) == DYNAMO_ITL_S and planner_itl_s(L4) > 0.13
    assert decode_tokens_per_second(preset("zero"), 0.05, 100) == math.inf


def test_planner_sizes_prefill_and_decode_shares_from_profiled_capacity():
    last = Interval(180.0, 1800, 1000.0, 100.0, None, None, 0.0)
    prefill = 10 * 1000 / (1000 / prefill_seconds(H100, 1000))
    decode = 10 * 100 / decode_tokens_per_second(H100, DYNAMO_ITL_S, 1050)
    assert planner_replicas(H100, last) == pytest.approx(prefill + decode)
    double = replace(last, requests=3600)
    assert planner_replicas(H100, double) == pytest.approx(2 * (prefill + decode))
    assert planner_replicas(H100, replace(last, requests=0)) == 0.0


def test_planner_corrections_follow_dynamo():
    last = Interval(180.0, 1800, 1000.0, 100.0, None, None, 0.0)
    base = planner_replicas(H100, last)
    alone = prefill_seconds(H100, 1000)
    # Queueing (measured TTFT above the profile) adds no prefill replicas: min(1, correction).
    assert planner_replicas(H100, replace(last, ttft_s=10 * alone)) == pytest.approx(base)
    # A faster prefill than profiled (cache hits) needs fewer.
    assert planner_replicas(H100, replace(last, ttft_s=alone / 2)) < base
    # Slower tokens than expected: the ITL target shrinks, so each replica decodes less.
    slow = replace(last, itl_s=4 * decode_step_seconds(H100, 1, 1050))
    assert planner_replicas(H100, slow) > base


def test_dynamo_holds_until_an_interval_is_measured_then_sizes_within_bounds():
    planner = DynamoLike(H100, min_replicas=0, max_replicas=5)
    assert planner.tick(0.0, 2, []) == 2
    first = scrape(0.0)
    busy = scrape(
        178.0,
        arrived=180 * 200,
        arrived_prompt_tokens=180 * 200 * 3000,
        arrived_output_tokens=180 * 200 * 100,
    )
    assert planner.tick(180.0, 2, [first, busy]) == 5  # far beyond 5 replicas: the bound
    assert planner.previous is busy
    idle = replace(busy, at=358.0)
    assert planner.tick(360.0, 5, [first, busy, idle]) == 1  # no requests: its minimum of 1


def test_dynamo_scales_a_step_in_load_after_its_interval():
    quiet = steady(1.0, 400, prompt=3000, output=50)
    loud = steady(20.0, 600, prompt=3000, output=50, start=400.0)
    trace = Trace("step", "azure", quiet.requests + loud.requests)
    cfg = config(initial_replicas=1, max_replicas=10, oracle_target=4.0)
    (run,) = compare(trace, cfg, ["dynamo"])
    s = summarize(run)
    assert s.policy == "dynamo" and 2 < s.peak_replicas <= 10
    first_up = next(p.at for p in run.timeline if p.replicas > 1)
    assert 400 < first_up <= 400 + 2 * DYNAMO_INTERVAL_S
    # It sizes the loud phase at its profiled capacity (prefill at full throughput, Dynamo's
    # rule) and no more: min(1, measured/expected TTFT) adds nothing for the queue that builds
    # at that utilisation.
    loud_interval = Interval(180.0, 3600, 3000.0, 50.0, None, None, 0.0)
    assert s.peak_replicas == math.ceil(planner_replicas(H100, loud_interval))


def test_spillover_does_not_shrink_the_oracle():
    # Spilled requests meet the SLO, so sized with spillover any target would; it is not.
    plain = calibrate_target(LONG_PROMPTS, config())
    assert calibrate_target(LONG_PROMPTS, config(spillover=True)) == plain < 128
