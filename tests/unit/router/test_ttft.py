"""The predictedTTFT picker: the cache index, the learned prefill rate, the pick and its bound."""

from __future__ import annotations

import random
import tracemalloc
from dataclasses import dataclass

import pytest

from inferscale.protocol.kvevents import CacheEvent
from inferscale.router.ttft import (
    ArrivalRate,
    CacheIndex,
    InFlightBlocks,
    PrefillRate,
    TtftRouting,
    delay_cost,
    estimate,
    predicted_ttft,
    tier_of,
)


@dataclass
class Cand:
    key: str
    in_flight: int = 0
    pending_prefill_tokens: int = 0


def rate(host_ratio: float = 0.25) -> PrefillRate:
    return PrefillRate(seconds_per_token=1e-4, base_seconds=0.01, host_ratio=host_ratio)


def pick(cands, index, hashes, prompt_tokens=1600, host_ratio=0.25, **kw):
    return predicted_ttft(
        cands,
        prompt_tokens=prompt_tokens,
        hashes=hashes,
        block_size=16,
        index=index,
        rates={},
        default_rate=rate(host_ratio),
        **kw,
    )


def test_index_matches_the_leading_prefix_per_tier():
    index = CacheIndex()
    index.stored("a", [1, 2, 3], "GPU")
    index.stored("a", [4], "CPU")
    assert index.match("a", [1, 2, 3, 4, 5]) == (3, 1)
    assert index.match("a", [9, 1, 2]) == (0, 0)  # a prefix stops at the first miss
    index.removed("a", [2], "GPU")
    assert index.match("a", [1, 2, 3]) == (1, 0)
    index.stored("a", [2], "cpu")  # media are case-insensitive
    assert index.match("a", [1, 2, 3]) == (2, 1)
    index.cleared("a")
    assert index.match("a", [1]) == (0, 0) and index.blocks("a") == 0
    assert index.match("unknown", [1]) == (0, 0)


def test_index_tolerates_events_for_unknown_blocks_and_media():
    index = CacheIndex()
    index.removed("a", [1, 2], "GPU")  # never stored: nothing to do, no error
    index.stored("a", [7], "disk")  # an unknown medium is slower than the GPU: host
    index.stored("a", [8], None)  # vLLM before media: the GPU
    assert tier_of("disk") == tier_of("CPU") and index.match("a", [8, 7]) == (1, 1)
    index.removed("a", [8, 7], "gpu")
    assert index.match("a", [7]) == (0, 1)


def test_index_is_bounded_per_replica_dropping_the_oldest():
    index = CacheIndex(max_blocks=800)
    index.stored("a", range(1000), "GPU")
    assert index.blocks("a") <= 800
    assert index.match("a", [999]) == (1, 0) and index.match("a", [0]) == (0, 0)
    with pytest.raises(ValueError):
        CacheIndex(max_blocks=0)


def test_index_memory_per_block_is_measured_and_small():
    index = CacheIndex()
    rng = random.Random(1)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(1000):
        # As decoded events bring them: new int objects the index then owns.
        index.stored("a", [rng.getrandbits(63) for _ in range(100)], "GPU")
    per_block = (tracemalloc.get_traced_memory()[0] - before) / 100_000
    tracemalloc.stop()
    # Measured 88 bytes: a dict entry, its index slot and the 64-bit hash int.
    assert 40 < per_block < 120


def test_rate_learns_towards_observations_and_resists_outliers():
    r = rate()
    for _ in range(200):
        r.observe(10_000, 0.01 + 10_000 * 4e-5)
    assert r.seconds_per_token == pytest.approx(4e-5, rel=0.02)
    r.observe(10_000, 500.0)  # one stall
    assert r.seconds_per_token < 4e-5 * 1.2
    for _ in range(100):
        r.observe(10, 0.02)  # small work teaches the base only
    assert r.base_seconds == pytest.approx(0.02, rel=0.05)
    assert r.seconds_per_token < 4.8e-5
    for bad in (float("nan"), float("inf"), -1.0):
        r.observe(10_000, bad)
    r.observe(-5, 1.0)
    assert 0 < r.seconds_per_token < 1e-2
    with pytest.raises(ValueError):
        PrefillRate(seconds_per_token=0)


def test_host_ratio_is_read_against_the_models_own_bias():
    # First tokens come 3,000 token equivalents sooner than the linear model says, with or
    # without host hits (queueing it does not model): that must not read as free host loads.
    true_ratio = 0.05
    r = rate()
    rng = random.Random(3)
    for i in range(2_000):
        host = 10_000 if i % 2 else 0
        own = rng.randrange(4_000, 12_000)
        work = own + round(r.host_ratio * host)
        implied = own + true_ratio * host - 3_000 + rng.gauss(0.0, 500.0)
        r.observe(work, r.base_seconds + r.seconds_per_token * implied, host)
    assert r.residual == pytest.approx(-3_000, rel=0.2)
    assert 0.025 < r.host_ratio < 0.1  # without the residual it sinks to its floor


def test_picks_the_replica_holding_the_prefix():
    index = CacheIndex()
    hashes = list(range(100))
    index.stored("b", hashes[:90], "GPU")
    chosen, est = pick([Cand("a"), Cand("b")], index, hashes)
    assert chosen.key == "b" and est.gpu_tokens == 1440 and est.own_tokens == 160


def test_queued_prefill_outweighs_a_small_hit():
    index = CacheIndex()
    hashes = list(range(100))
    index.stored("b", hashes[:10], "GPU")
    cands = [Cand("a"), Cand("b", in_flight=2, pending_prefill_tokens=20_000)]
    assert pick(cands, index, hashes)[0].key == "a"


def test_a_host_hit_costs_its_transfer():
    index = CacheIndex()
    hashes = list(range(100))
    index.stored("a", hashes[:50], "GPU")
    index.stored("b", hashes, "CPU")
    cands = [Cand("a"), Cand("b")]
    cheap = pick(cands, index, hashes, host_ratio=0.01)
    assert cheap[0].key == "b" and cheap[1].host_tokens == 1599
    # Its own work (what the replica's pending prefill grows by) counts the load at the ratio.
    assert cheap[1].own_tokens == 1 + 16 and cheap[1].work_tokens == 17
    dear = pick(cands, index, hashes, host_ratio=1.0)  # as dear as recomputing
    assert dear[0].key == "a"


def test_queued_host_loads_count_as_pending_work():
    # A replica whose queue holds host loads: b's estimate grows with them, a GPU hit does not.
    index = CacheIndex()
    hashes = list(range(100))
    index.stored("a", hashes, "GPU")
    cands = [Cand("a", pending_prefill_tokens=0)]
    first = pick(cands, index, hashes, host_ratio=0.05)[1]
    assert first.host_tokens == 0 and first.own_tokens == 1
    index.cleared("a")
    index.stored("a", hashes, "CPU")
    loaded = pick(cands, index, hashes, host_ratio=0.05)[1]
    assert loaded.own_tokens == 1 + round(0.05 * 1599) and loaded.cost_seconds > first.cost_seconds


def test_host_ratio_learns_the_median_and_stays_bounded():
    true_ratio = 0.05
    r = rate()
    rng = random.Random(7)
    for _ in range(600):
        own, host = 2_000, 10_000
        work = own + round(r.host_ratio * host)
        # Queueing noise far larger than the host term, symmetric, plus the odd stall.
        noise = rng.gauss(0.0, 0.2) if rng.random() > 0.02 else 500.0
        ttft = r.base_seconds + r.seconds_per_token * (own + true_ratio * host) + noise
        r.observe(work, max(ttft, 0.0), host)
    assert 0.025 < r.host_ratio < 0.1
    before = r.host_ratio
    r.observe(work, 1e5, host)  # one stall moves it one step, no more
    assert r.host_ratio == pytest.approx(before * 1.05)
    for _ in range(500):
        r.observe(100_000, 1e5, 10_000)
    assert r.host_ratio == 1.0  # never dearer than recompute
    for _ in range(500):
        r.observe(100_000, 0.0, 10_000)
    assert r.host_ratio == pytest.approx(1e-3)  # never free
    small = rate()
    small.observe(2_000, 5.0, host_tokens=100)  # too few host tokens to teach the ratio
    assert small.host_ratio == 0.25


def test_the_load_bound_keeps_affinity_from_piling_up():
    index = CacheIndex()
    hashes = list(range(100))
    index.stored("b", hashes, "GPU")
    cands = [Cand("a", in_flight=1), Cand("b", in_flight=6)]
    assert pick(cands, index, hashes, load_slack=4)[0].key == "a"
    assert pick(cands, index, hashes, load_slack=5)[0].key == "b"


def test_without_cache_it_is_least_prefill_and_ties_rotate():
    index = CacheIndex()
    cands = [Cand("a", 1, 500), Cand("b", 1, 100), Cand("c", 2, 100)]
    assert pick(cands, index, [1, 2])[0].key == "b"
    idle = [Cand("a"), Cand("b"), Cand("c")]
    assert {pick(idle, index, [], start=s)[0].key for s in range(3)} == {"a", "b", "c"}


def test_estimate_of_a_full_hit_still_recomputes_one_token():
    index = CacheIndex()
    index.stored("a", range(10), "GPU")
    est = estimate(
        Cand("a"),
        prompt_tokens=160,
        hashes=list(range(10)),
        block_size=16,
        index=index,
        rate=rate(),
    )
    assert est.own_tokens == 1 and est.ttft_seconds == pytest.approx(0.01 + 1e-4)


def test_index_applies_events_in_order():
    index = CacheIndex()
    events = [
        CacheEvent("stored", (1, 2, 3), "GPU"),
        CacheEvent("removed", (3,), "GPU"),
        CacheEvent("stored", (3,), "CPU"),
    ]
    assert index.apply("a", events) == 3 and index.match("a", [1, 2, 3]) == (2, 1)
    assert index.apply("a", [CacheEvent("cleared", (), None)]) == 1
    assert index.blocks("a") == 0


def test_blocks_in_flight_count_as_cached_at_their_replica():
    index = CacheIndex()
    hashes = list(range(100))
    flying = InFlightBlocks()
    flying.sent("b", hashes[:90])
    flying.sent("b", hashes[:10])  # a second request sharing the first blocks
    # No event has announced them yet: without the rule both replicas look empty.
    assert pick([Cand("a"), Cand("b")], index, hashes)[0].key == "a"
    chosen, est = pick([Cand("a"), Cand("b")], index, hashes, in_flight=flying)
    assert chosen.key == "b" and est.gpu_tokens == 1440
    # A host-only block that is in flight is on the GPU by the time this prompt runs.
    index.stored("b", hashes[:90], "CPU")
    assert index.match("b", hashes, flying.get("b")) == (90, 0)
    flying.finished("b", hashes[:90])
    assert dict(flying.get("b") or {}) == dict.fromkeys(hashes[:10], 1)
    flying.finished("b", hashes[:10])
    flying.finished("gone", hashes)  # never sent: nothing to do
    assert flying.get("b") is None
    flying.sent("c", hashes)
    flying.forget({"a"})
    assert flying.get("c") is None


def test_delay_cost_grows_with_arrivals_and_the_work_added():
    assert delay_cost(2.0, 1.0, 0.0) == 2.0
    assert delay_cost(2.0, 1.0, 0.5) == pytest.approx(3.0)
    assert delay_cost(2.0, 0.0, 5.0) == 2.0


def test_under_load_a_big_hit_waits_behind_a_short_queue():
    index = CacheIndex()
    hashes = list(range(1000))  # 16k tokens
    index.stored("b", hashes[:800], "GPU")
    # b holds 80 % of the prompt but has 14k tokens queued: by TTFT alone, the idle replica
    # (16k to recompute) wins by a hair; but its recompute delays whoever arrives behind it.
    cands = [Cand("a", 1, 0), Cand("b", 2, 14_000)]
    greedy, est = pick(cands, index, hashes, prompt_tokens=16_000)
    assert greedy.key == "a" and est.cost_seconds == est.ttft_seconds
    loaded, est = pick(cands, index, hashes, prompt_tokens=16_000, arrivals_per_second=1.0)
    assert loaded.key == "b" and est.cost_seconds > est.ttft_seconds


def test_arrival_rate_is_learned_from_gaps_and_bounded():
    r = ArrivalRate(weight=0.5)
    assert r.per_second() == 0.0
    r.arrived(10.0)
    assert r.per_second() == 0.0
    for t in range(11, 30):
        r.arrived(float(t))
    assert r.per_second() == pytest.approx(1.0)
    for _ in range(40):
        r.arrived(29.0)  # a burst at one instant, or a clock that went back
    assert r.per_second() == pytest.approx(1 / ArrivalRate.MIN_GAP, rel=0.01)
    with pytest.raises(ValueError):
        ArrivalRate(weight=0)


def test_routing_counts_each_pools_arrivals_and_shares_its_rate():
    routing = TtftRouting(seconds_per_token=1e-4)
    hashes = list(range(1000))
    routing.index.stored("b", hashes[:800], "GPU")
    cands = [Cand("a", 1, 0), Cand("b", 2, 14_000)]
    # The first pick has no rate yet: TTFT alone; at one request a second the holder wins.
    assert routing.pick(cands, hashes, 16_000, 0, "m", now=0.0)[0].key == "a"
    for t in range(1, 40):
        chosen, _ = routing.pick(cands, hashes, 16_000, 0, "m", now=float(t))
    assert chosen.key == "b" and routing.arrivals["m"].per_second() == pytest.approx(1.0)
    routing.observe("m", 10_000, 5.0)
    assert routing.rates["m"].seconds_per_token > 1e-4 and "other" not in routing.rates
    routing.keep(["a"], ["other"])
    assert routing.rates == {} and routing.arrivals == {}


def test_a_whole_answer_of_one_token_teaches_the_rate_and_longer_ones_do_not():
    routing = TtftRouting(seconds_per_token=1e-4)
    for tokens in (5, None, "1", True, -1):
        assert not routing.observe_answer("m", 10_000, 5.0, tokens)
    assert "m" not in routing.rates
    assert routing.observe_answer("m", 10_000, 5.0, 1)
    assert routing.rates["m"].seconds_per_token > 1e-4
