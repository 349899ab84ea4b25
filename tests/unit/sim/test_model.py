"""The latency model in model time: costs, queueing, prefix cache, cancellation, determinism."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from inferscale.protocol.simtokens import block_hashes
from inferscale.sim import PRESETS, EngineParams, LatencyModel, SeqState


def make_params(**overrides) -> EngineParams:
    base = {
        "max_num_seqs": 8,
        "kv_capacity_tokens": 4096,
        "block_size": 16,
        "max_model_len": 2048,
        "step_base_seconds": 0.01,
        "prefill_seconds_per_token": 0.001,
    }
    return EngineParams(**{**base, **overrides})


def drain(model: LatencyModel) -> None:
    while (t := model.next_event_time()) is not None:
        model.advance(t)


def test_single_request_costs_prefill_then_one_step_per_token():
    model = LatencyModel(make_params())
    seq = model.submit(0.0, prompt_tokens=100, output_tokens=5)
    drain(model)
    assert seq.state is SeqState.FINISHED
    assert seq.ttft == pytest.approx(0.01 + 100 * 0.001)
    assert seq.finished_at == pytest.approx(0.11 + 4 * 0.01)
    assert seq.generated == 5
    stats = model.stats
    assert (stats.prompt_tokens, stats.generation_tokens) == (100, 5)
    assert stats.itl.count == 4 and stats.ttft.count == 1 and stats.e2e.count == 1


def test_decode_step_grows_with_batch_and_context():
    params = make_params(decode_seconds_per_seq=0.001, decode_seconds_per_context_token=1e-5)
    alone = LatencyModel(params)
    alone.submit(0.0, 10, 20)
    drain(alone)
    crowd = LatencyModel(params)
    for _ in range(6):
        crowd.submit(0.0, 10, 20)
    drain(crowd)
    mean_alone = alone.stats.itl.total / alone.stats.itl.count
    mean_crowd = crowd.stats.itl.total / crowd.stats.itl.count
    assert mean_crowd > mean_alone * 1.5


def test_requests_wait_for_a_batch_slot():
    model = LatencyModel(make_params(max_num_seqs=1))
    first = model.submit(0.0, 10, 3)
    second = model.submit(0.0, 10, 3)
    assert (model.num_running, model.num_waiting) == (1, 1)
    drain(model)
    assert second.queue_time == pytest.approx(first.finished_at)
    assert second.ttft > first.ttft


def test_requests_wait_when_the_kv_cache_is_full():
    # 4 blocks of 16 tokens; each sequence needs 3 (32 prompt + 16 output).
    model = LatencyModel(make_params(kv_capacity_tokens=64, max_model_len=64))
    first = model.submit(0.0, 32, 16)
    second = model.submit(0.0, 32, 16)
    assert (model.num_running, model.num_waiting) == (1, 1)
    assert model.kv_usage == pytest.approx(0.75)
    drain(model)
    assert second.admitted_at == pytest.approx(first.finished_at)
    assert second.ttft > first.ttft
    assert model.kv_usage == 0.0


def test_queue_is_first_come_first_served():
    model = LatencyModel(make_params(kv_capacity_tokens=64, max_model_len=64))
    model.submit(0.0, 32, 16)
    big = model.submit(0.0, 40, 8)  # needs 3 blocks: must wait
    small = model.submit(0.0, 8, 8)  # would fit now, but waits behind the head
    assert model.num_waiting == 2
    drain(model)
    assert small.admitted_at >= big.admitted_at


def test_prefix_cache_hit_skips_prefill_and_is_counted_in_tokens():
    model = LatencyModel(make_params())
    ids = list(range(160))
    hashes = block_hashes(ids, 16)
    cold = model.submit(0.0, 160, 2, hashes)
    drain(model)
    warm = model.submit(10.0, 160, 2, hashes)
    drain(model)
    assert cold.cached_tokens == 0
    assert warm.cached_tokens == 159  # a full hit still recomputes the last token
    assert warm.ttft < cold.ttft / 10
    assert model.stats.prefix_cache_queries == 320
    assert model.stats.prefix_cache_hits == 159


def test_shared_prefix_only_up_to_the_first_different_block():
    model = LatencyModel(make_params())
    a = list(range(64))
    b = list(range(32)) + [999] * 32
    model.submit(0.0, 64, 1, block_hashes(a, 16))
    drain(model)
    other = model.submit(1.0, 64, 1, block_hashes(b, 16))
    drain(model)
    assert other.cached_tokens == 32


def test_lru_eviction_gives_up_the_oldest_cached_blocks():
    # 8 blocks. A and B (2 blocks each) finish and stay cached; C needs 6 fresh blocks, so
    # 2 cached ones go, and A is older.
    model = LatencyModel(make_params(kv_capacity_tokens=128, max_model_len=128))
    a, b, c = (block_hashes([k] * 32, 16) for k in (1, 2, 3))
    model.submit(0.0, 32, 0, a)
    drain(model)
    model.submit(1.0, 32, 0, b)
    drain(model)
    model.submit(2.0, 96, 0, c)
    drain(model)
    again_b = model.submit(3.0, 32, 1, b)
    drain(model)
    again_a = model.submit(4.0, 32, 1, a)
    drain(model)
    assert again_b.cached_tokens == 31
    assert again_a.cached_tokens == 0


def test_cancel_frees_slot_and_blocks_at_once_and_admits_the_next():
    model = LatencyModel(make_params(kv_capacity_tokens=64, max_model_len=64))
    first = model.submit(0.0, 32, 16)
    second = model.submit(0.0, 32, 16)
    model.advance(0.1)
    assert model.num_waiting == 1
    model.cancel(first, 0.1)
    assert first.state is SeqState.CANCELLED
    assert (model.num_running, model.kv_usage) == (0, 0.0)
    # The step in flight still ends (the GPU is busy); the next one admits the waiting request.
    model.advance(model.next_event_time())
    assert model.num_waiting == 0 and model.num_running == 1
    assert second.state is SeqState.RUNNING
    drain(model)
    model.cancel(second, 100.0)  # already finished: no effect
    assert second.state is SeqState.FINISHED
    assert (model.num_running, model.kv_usage, model.stats.requests_cancelled) == (0, 0.0, 1)


def test_cancel_a_waiting_request():
    model = LatencyModel(make_params(max_num_seqs=1))
    model.submit(0.0, 10, 50)
    queued = model.submit(0.0, 10, 50)
    model.cancel(queued, 0.001)
    assert model.num_waiting == 0 and queued.admitted_at is None


def test_startup_delay_holds_requests_until_ready():
    model = LatencyModel(make_params(startup_delay_seconds=30.0), start=100.0)
    assert not model.is_ready(129.0) and model.is_ready(130.0)
    seq = model.submit(101.0, 10, 1)
    drain(model)
    assert seq.admitted_at == 130.0
    assert seq.queue_time == pytest.approx(29.0)


def test_slow_start_multiplies_step_time():
    params = make_params(slow_start_seconds=10.0, slow_start_factor=3.0)
    model = LatencyModel(params)
    early = model.submit(0.0, 10, 1)
    drain(model)
    late = model.submit(20.0, 10, 1)
    drain(model)
    assert early.ttft == pytest.approx(3 * late.ttft)


def test_prefill_only_request_finishes_after_its_prefill():
    model = LatencyModel(make_params())
    seq = model.submit(0.0, 50, 0)
    drain(model)
    assert seq.state is SeqState.FINISHED and seq.generated == 0
    assert seq.ttft is None and model.stats.ttft.count == 0
    assert model.stats.prompt_tokens == 50


def test_oversized_sequences_are_refused():
    model = LatencyModel(make_params(kv_capacity_tokens=64, max_model_len=64))
    with pytest.raises(ValueError):
        model.submit(0.0, 60, 10)
    with pytest.raises(ValueError):
        model.submit(0.0, 0, 10)


def test_params_refuse_a_context_longer_than_the_kv_cache():
    with pytest.raises(ValidationError):
        make_params(kv_capacity_tokens=1024, max_model_len=2048)


def _workload(model: LatencyModel, rng: random.Random, poll: bool) -> list[tuple]:
    poll_rng = random.Random(99)  # its own stream, so polling does not change the workload
    t = 0.0
    seqs = []
    for _ in range(300):
        t += rng.expovariate(40.0)
        if poll:
            model.advance(t - poll_rng.random() * 0.01)
        prefix = rng.randrange(4)
        ids = [prefix] * 64 + [rng.randrange(10**6) for _ in range(rng.randrange(1, 64))]
        seqs.append(model.submit(t, len(ids), rng.randrange(1, 80), block_hashes(ids, 16)))
    drain(model)
    return [(s.admitted_at, s.first_token_at, s.finished_at, s.cached_tokens) for s in seqs]


@pytest.mark.parametrize("spikes", [0.0, 0.2])
def test_same_inputs_give_same_numbers_however_often_it_is_advanced(spikes):
    params = make_params(
        kv_capacity_tokens=2048,
        max_model_len=1024,
        decode_seconds_per_seq=0.0005,
        decode_seconds_per_context_token=1e-6,
        spike_probability=spikes,
        spike_seconds=0.05,
    )
    runs = [
        _workload(LatencyModel(params, seed=7), random.Random(1), poll=poll)
        for poll in (False, True, False)
    ]
    assert runs[0] == runs[1] == runs[2]
    other_seed = _workload(LatencyModel(params, seed=8), random.Random(1), poll=False)
    assert (other_seed == runs[0]) is (spikes == 0.0)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_plausible(name):
    params = PRESETS[name]
    model = LatencyModel(params)
    seq = model.submit(0.0, 1000, 100)
    drain(model)
    if name == "zero":
        assert seq.finished_at == params.startup_delay_seconds
        return
    itl = model.stats.itl.total / model.stats.itl.count
    assert 0.004 < itl < 0.08  # 8B decode: ~6 ms on an H100, ~55 ms on an L4
    assert 0.02 < seq.ttft - params.startup_delay_seconds < 0.5


def test_pending_prompt_tokens_count_prompts_until_their_first_token():
    model = LatencyModel(make_params(max_num_seqs=1))
    first = model.submit(0.0, prompt_tokens=100, output_tokens=3)
    second = model.submit(0.0, prompt_tokens=40, output_tokens=2)  # waits for the batch slot
    embed = model.submit(0.0, prompt_tokens=30, output_tokens=0)
    gone = model.submit(0.0, prompt_tokens=7, output_tokens=2)
    assert model.pending_prompt_tokens == 177
    model.cancel(gone, 0.0)  # a queued request that goes takes its prompt with it
    assert model.pending_prompt_tokens == 170
    first_step = model.next_event_time()  # the first request's prefill
    assert first_step is not None
    model.advance(first_step)
    assert first.first_token_at == first_step and model.pending_prompt_tokens == 70
    drain(model)
    assert second.first_token_at is not None and embed.finished_at is not None
    assert model.pending_prompt_tokens == 0
    # A request cancelled in the middle of its prefill leaves nothing behind either.
    late = model.submit(10.0, prompt_tokens=500, output_tokens=2)
    model.advance(10.0 + 1e-6)
    assert late.prefilling and model.pending_prompt_tokens == 500
    model.cancel(late, 10.0 + 2e-6)
    assert model.pending_prompt_tokens == 0
