"""LoRA adapters in the latency model: slots, swap cost, waiting for a slot, LRU eviction."""

from __future__ import annotations

import pytest

from inferscale.sim import EngineParams, LatencyModel, SeqState


def make_model(**overrides) -> LatencyModel:
    base = {
        "max_num_seqs": 8,
        "kv_capacity_tokens": 4096,
        "max_model_len": 2048,
        "step_base_seconds": 0.01,
        "prefill_seconds_per_token": 0.001,
        "max_loras": 1,
        "lora_swap_seconds": 0.5,
    }
    return LatencyModel(EngineParams(**{**base, **overrides}))


def drain(model: LatencyModel) -> None:
    for _ in range(10_000):
        if (t := model.next_event_time()) is None:
            return
        model.advance(t)
    raise AssertionError("the model never went idle")


def test_swapping_an_adapter_in_costs_its_admission_step():
    model = make_model()
    base = model.submit(0.0, prompt_tokens=100, output_tokens=1)
    drain(model)
    lora = model.submit(10.0, prompt_tokens=100, output_tokens=1, adapter="sql")
    drain(model)
    assert lora.ttft == pytest.approx(base.ttft + 0.5)
    assert model.stats.adapter_swaps == 1
    again = model.submit(20.0, prompt_tokens=100, output_tokens=1, adapter="sql")
    drain(model)
    assert again.ttft == pytest.approx(base.ttft)  # still in its slot: no second swap
    assert model.stats.adapter_swaps == 1


def test_a_request_waits_while_every_slot_serves_a_running_adapter():
    model = make_model()
    first = model.submit(0.0, prompt_tokens=10, output_tokens=20, adapter="a")
    second = model.submit(0.0, prompt_tokens=10, output_tokens=1, adapter="b")
    model.advance(0.6)
    assert second.state is SeqState.WAITING
    assert model.running_adapters == {"a": 1}
    assert model.waiting_adapters == {"b": 1}
    drain(model)
    assert second.admitted_at == pytest.approx(first.finished_at)
    assert model.stats.adapter_swaps == 2
    assert model.slotted_adapters == ["b"]
    assert model.running_adapters == {} and model.waiting_adapters == {}


def test_requests_of_one_adapter_share_its_slot_and_base_requests_need_none():
    model = make_model()
    seqs = [model.submit(0.0, 10, 5, adapter="a") for _ in range(3)]
    seqs.append(model.submit(0.0, 10, 5))
    model.advance(0.53)  # the first step (with its swap) admitted one, the second the rest
    assert all(s.state is SeqState.RUNNING for s in seqs)
    assert model.running_adapters == {"a": 3}
    drain(model)
    assert model.stats.adapter_swaps == 1


def test_the_least_recently_used_idle_adapter_leaves_its_slot():
    model = make_model(max_loras=2)
    for t, name in [(0.0, "a"), (1.0, "b"), (2.0, "a")]:
        model.submit(t, 10, 1, adapter=name)
        drain(model)
    assert model.slotted_adapters == ["b", "a"]
    model.submit(3.0, 10, 1, adapter="c")
    drain(model)
    assert model.slotted_adapters == ["a", "c"]
    assert model.stats.adapter_swaps == 3


def test_cancelling_a_running_request_frees_its_adapters_slot():
    model = make_model()
    first = model.submit(0.0, 10, 100, adapter="a")
    second = model.submit(0.0, 10, 1, adapter="b")
    model.advance(1.0)
    model.cancel(first, 1.0)
    drain(model)
    assert second.state is SeqState.FINISHED
    assert second.admitted_at == pytest.approx(1.0)


def test_dropping_an_idle_adapter_frees_its_slot_but_not_a_busy_one():
    model = make_model(max_loras=2)
    model.submit(0.0, 10, 1, adapter="a")
    drain(model)
    busy = model.submit(1.0, 10, 50, adapter="b")
    model.advance(1.0)
    model.drop_adapter("a")
    model.drop_adapter("b")
    assert model.slotted_adapters == ["b"]
    drain(model)
    assert busy.state is SeqState.FINISHED


@pytest.mark.parametrize("bad", [{"max_loras": 0}, {"lora_swap_seconds": -1}])
def test_bad_lora_params_are_refused(bad):
    with pytest.raises(ValueError):
        make_model(**bad)


def mean_ttft_and_swaps(order: list[str]) -> tuple[float, int]:
    model = make_model(max_loras=2, lora_swap_seconds=0.05)
    seqs = []
    for i, name in enumerate(order):
        seqs.append(model.submit(i * 0.5, 50, 4, adapter=name))
        drain(model)
    return sum(s.ttft for s in seqs) / len(seqs), model.stats.adapter_swaps


def test_grouping_requests_by_adapter_means_fewer_swaps_and_lower_ttft():
    # What an adapter-affine router does to one replica's stream, against a spread of adapters.
    grouped = ["a"] * 6 + ["b"] * 6 + ["c"] * 6 + ["d"] * 6
    spread = ["a", "b", "c", "d"] * 6
    grouped_ttft, grouped_swaps = mean_ttft_and_swaps(grouped)
    spread_ttft, spread_swaps = mean_ttft_and_swaps(spread)
    assert (grouped_swaps, spread_swaps) == (4, 24)
    assert spread_ttft - grouped_ttft == pytest.approx(20 * 0.05 / 24)
