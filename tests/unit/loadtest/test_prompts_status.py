"""Prompt sizes and shared prefixes; reading InferenceModel status tolerantly."""

import pytest

from inferscale.api.v1alpha1.inference_model import InferenceModelStatus, ObservedSignals
from inferscale.loadtest.arrivals import Arrival
from inferscale.loadtest.prompts import BLOCK_CACHE_SIZE, PromptBuilder
from inferscale.loadtest.status import model_status
from inferscale.protocol.simtokens import count_tokens


@pytest.mark.parametrize("tokens", [1, 7, 128, 2000])
def test_prompts_have_the_asked_token_count_under_the_sims_rule(tokens):
    text = PromptBuilder(0).build(Arrival(3, 0.0, tokens, 1))
    assert count_tokens(text) == tokens == len(text.split())


def test_prompts_are_deterministic_and_distinct():
    a = PromptBuilder(1).build(Arrival(0, 0.0, 50, 1))
    assert a == PromptBuilder(1).build(Arrival(0, 0.0, 50, 1))
    assert a != PromptBuilder(1).build(Arrival(1, 0.0, 50, 1))
    assert a != PromptBuilder(2).build(Arrival(0, 0.0, 50, 1))
    # No accidental shared prefix between requests without blocks.
    assert a.split()[:5] != PromptBuilder(1).build(Arrival(1, 0.0, 50, 1)).split()[:5]


def test_equal_block_ids_give_equal_prefixes():
    builder = PromptBuilder(0, block_tokens=16)
    first = builder.build(Arrival(0, 0.0, 40, 1, (7, 8, 9))).split()
    second = builder.build(Arrival(1, 0.0, 40, 1, (7, 8, 5))).split()
    other = PromptBuilder(0, block_tokens=16).build(Arrival(2, 0.0, 40, 1, (7,))).split()
    assert first[:32] == second[:32] and first[32:] != second[32:]
    assert other[:16] == first[:16] and other[16:] != first[16:32]
    assert len(first) == len(second) == len(other) == 40


def test_short_prompts_cut_blocks_and_the_cache_is_bounded():
    builder = PromptBuilder(0, block_tokens=4)
    assert len(builder.build(Arrival(0, 0.0, 3, 1, (1, 2))).split()) == 3
    for block in range(BLOCK_CACHE_SIZE + 50):
        builder.build(Arrival(block, 0.0, 4, 1, (block,)))
    assert len(builder._blocks) == BLOCK_CACHE_SIZE


def _obj(status):
    return {"metadata": {"name": "m", "namespace": "ns"}, "spec": {}, "status": status}


def test_model_status_reads_what_the_operator_writes():
    status = InferenceModelStatus(
        ready_replicas=2,
        replicas=3,
        desired_replicas=4,
        served_name="llama",
        last_scale_time="2025-01-01T00:00:00Z",
        last_scale_reason="scaled 2 -> 4: 70 in flight",
        signals=ObservedSignals(in_flight=70.0, held=3),
    ).model_dump(by_alias=True, exclude_none=True)
    status["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "Loading", "lastTransitionTime": "x"}
    ]
    m = model_status(_obj(status))
    assert (m.key, m.served_name, m.ready, m.replicas, m.desired) == ("ns/m", "llama", 2, 3, 4)
    assert (m.in_flight, m.held, m.ready_condition) == (70.0, 3, "Loading")
    assert m.last_scale_reason.startswith("scaled 2 -> 4")


@pytest.mark.parametrize(
    "status",
    [None, {}, {"readyReplicas": "two", "desiredReplicas": 1.5, "signals": [1], "conditions": 3}],
)
def test_model_status_shows_unknown_for_missing_or_odd_fields(status):
    m = model_status(_obj(status))
    assert (m.ready, m.desired, m.in_flight, m.held, m.ready_condition) == (None,) * 5
    assert m.served_name == "m"


def test_served_name_falls_back_to_the_spec_then_the_name():
    assert model_status({"metadata": {"name": "a"}, "spec": {"servedName": "b"}}).served_name == "b"
    assert model_status({"metadata": {"name": "a"}}).served_name == "a"
