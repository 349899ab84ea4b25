"""The host-memory KV tier: evicted blocks move there, hits cost a transfer, events mirror it."""

from __future__ import annotations

import random

import pytest

from inferscale.protocol.simtokens import block_hashes
from inferscale.sim import CPU, GPU, EngineParams, KvEvent, LatencyModel
from inferscale.sim.metrics import render_vllm


def make_params(**overrides) -> EngineParams:
    base = {
        "max_num_seqs": 8,
        "kv_capacity_tokens": 128,  # 8 blocks
        "block_size": 16,
        "max_model_len": 128,
        "step_base_seconds": 0.01,
        "prefill_seconds_per_token": 0.001,
        "host_transfer_seconds_per_token": 0.0001,
    }
    return EngineParams(**{**base, **overrides})


def drain(model: LatencyModel) -> None:
    while (t := model.next_event_time()) is not None:
        model.advance(t)


def blocks(key: int, tokens: int) -> tuple[int, ...]:
    return tuple(block_hashes([key] * tokens, 16))


def evict_a(model: LatencyModel) -> tuple[int, ...]:
    """A and B (2 blocks each) finish cached; C needs 6 fresh blocks, so A's two are evicted."""
    a = blocks(1, 32)
    for t, (key, tokens) in enumerate([(1, 32), (2, 32), (3, 96)]):
        model.submit(float(t), tokens, 0, blocks(key, tokens))
        drain(model)
    return a


def test_an_evicted_block_is_loaded_from_the_host_at_transfer_cost():
    with_host = LatencyModel(make_params(host_kv_capacity_tokens=512))
    a = evict_a(with_host)
    again = with_host.submit(10.0, 32, 1, a)
    drain(with_host)
    assert again.cached_tokens == 31 and again.host_tokens == 31
    # One recomputed token plus 31 transferred, instead of 32 recomputed.
    assert again.ttft == pytest.approx(0.01 + 0.001 * 1 + 0.0001 * 31)
    assert with_host.stats.host_cache_hits == 31
    without = LatencyModel(make_params())
    evict_a(without)
    cold = without.submit(10.0, 32, 1, a)
    drain(without)
    assert cold.cached_tokens == 0 and cold.ttft == pytest.approx(0.01 + 0.001 * 32)


def test_a_block_is_never_in_both_tiers_and_the_host_tier_is_bounded_lru():
    model = LatencyModel(make_params(host_kv_capacity_tokens=32))  # 2 host blocks
    a = evict_a(model)
    held = model.cached_blocks()
    assert held[CPU] == set(a) and not held[CPU] & held[GPU]
    model.submit(10.0, 32, 1, a)  # back to the GPU: the host copy goes
    drain(model)
    assert model.cached_blocks()[CPU].isdisjoint(a)
    # Fill the GPU with new prompts: evictions pass through the two host blocks, oldest out.
    for t, key in enumerate(range(4, 9)):
        model.submit(20.0 + t, 64, 0, blocks(key, 64))
        drain(model)
    assert len(model.cached_blocks()[CPU]) == 2


def test_events_say_what_moved_where():
    model = LatencyModel(make_params(host_kv_capacity_tokens=512), record_events=True)
    a = evict_a(model)
    events = model.take_events()
    assert events[0] == KvEvent("stored", a, GPU)
    assert KvEvent("removed", a[:1], GPU) in events and KvEvent("stored", a[:1], CPU) in events
    assert model.take_events() == []
    model.submit(10.0, 32, 1, a)
    moved = model.take_events()
    # Off the host, then room made on the GPU (its own evictions), then stored there.
    assert moved[0] == KvEvent("removed", a, CPU) and moved[-1] == KvEvent("stored", a, GPU)


def test_events_replayed_into_sets_mirror_the_tiers_exactly():
    params = make_params(kv_capacity_tokens=1024, max_model_len=512, host_kv_capacity_tokens=800)
    model = LatencyModel(params, record_events=True)
    mirror: dict[str, set[int]] = {GPU: set(), CPU: set()}
    rng = random.Random(3)
    t = 0.0
    for _ in range(400):
        t += rng.expovariate(30.0)
        ids = [rng.randrange(6)] * 48 + [rng.randrange(10**6) for _ in range(rng.randrange(1, 200))]
        model.submit(t, len(ids), rng.randrange(1, 30), block_hashes(ids, 16))
        model.advance(t)
        for e in model.take_events():
            target = mirror[e.medium]
            if e.kind == "stored":
                assert target.isdisjoint(e.hashes)
                target.update(e.hashes)
            else:
                assert target.issuperset(e.hashes)
                target.difference_update(e.hashes)
        assert mirror == model.cached_blocks()
    assert model.stats.host_cache_hits > 0


def test_no_events_are_kept_unless_asked():
    model = LatencyModel(make_params(host_kv_capacity_tokens=512))
    evict_a(model)
    assert model.events is None and model.take_events() == []


def metric(text: str, name: str) -> float | None:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values) if values else None


def test_host_hits_are_vllms_external_prefix_cache_counters():
    with_host = LatencyModel(make_params(host_kv_capacity_tokens=512))
    a = evict_a(with_host)
    with_host.submit(10.0, 32, 1, a)
    drain(with_host)
    text = render_vllm(with_host, "m")
    s = with_host.stats
    # Queried: the tokens the GPU cache missed; hit: the 31 loaded from the host.
    queries = metric(text, "vllm:external_prefix_cache_queries_total")
    assert queries == s.prefix_cache_queries - s.prefix_cache_hits > 31
    assert metric(text, "vllm:external_prefix_cache_hits_total") == 31
    assert metric(text, "vllm:prefix_cache_hits_total") == s.prefix_cache_hits  # GPU only
    # Without a host tier there is no connector, so no such counters (as in vLLM).
    assert "external_prefix" not in render_vllm(LatencyModel(make_params()), "m")
