"""Selecting a route's candidate: the cost and latency policies, availability, cost saved."""

from __future__ import annotations

import pytest

from inferscale.router.difficulty import load_difficulty_model
from inferscale.router.selection import (
    Candidate,
    CandidateState,
    Policy,
    Selection,
    choose_by_cost,
    choose_by_latency,
    choose_by_weight,
    cost_saved,
    prompt_to_score,
    select,
)

SMALL = Candidate("small", input_price=0.1, output_price=0.2, tier=1)
MEDIUM = Candidate("medium", input_price=0.5, output_price=1.0, tier=1)
BIG = Candidate("big", input_price=2.5, output_price=10.0, tier=2)
HOSTED = Candidate("openai/gpt-4o", input_price=5.0, output_price=15.0, tier=2)
ALL = [BIG, SMALL, HOSTED, MEDIUM]
EJECTED = CandidateState(available=False)
COLD = CandidateState(warm=False)


@pytest.mark.parametrize(
    ("score", "states", "chosen"),
    [
        (0.0, {}, "small"),  # easy: the cheapest of the weakest tier is enough
        (0.5, {}, "big"),  # hard: the cheapest of the strongest tier
        (0.0, {"small": EJECTED}, "medium"),  # skip an ejected candidate
        (0.5, {"big": EJECTED}, "openai/gpt-4o"),
        (0.0, {"small": COLD}, "medium"),  # a cold model does not hold an easy request
        (0.0, {"small": COLD, "medium": COLD}, "big"),  # a warm stronger one serves it
        (0.5, {"big": COLD, "openai/gpt-4o": EJECTED}, "big"),  # cold strong beats weak
        # nothing strong usable: the best available weaker tier answers
        (0.5, {"big": EJECTED, "openai/gpt-4o": EJECTED}, "small"),
    ],
)
def test_cost_policy(score, states, chosen) -> None:
    choice = choose_by_cost(ALL, states, score=score, threshold=0.2)
    assert choice is not None and choice.candidate.name == chosen


def test_cost_policy_says_why_and_nothing_usable_is_none() -> None:
    choice = choose_by_cost(ALL, {"big": EJECTED, "openai/gpt-4o": EJECTED}, 0.9, 0.2)
    assert choice is not None and "best available tier 1" in choice.reason
    everyone_out = {c.name: EJECTED for c in ALL}
    assert choose_by_cost(ALL, everyone_out, 0.9, 0.2) is None
    assert choose_by_cost([], {}, 0.9, 0.2) is None


def test_threshold_is_inclusive() -> None:
    assert choose_by_cost([SMALL, BIG], {}, 0.2, 0.2).candidate is BIG  # type: ignore[union-attr]


def test_latency_policy_prefers_warm_and_fast() -> None:
    states = {
        "small": CandidateState(expected_wait=0.9),
        "big": CandidateState(expected_wait=0.1, warm=False),
        "openai/gpt-4o": CandidateState(expected_wait=0.4),
        "medium": CandidateState(expected_wait=0.3, available=False),
    }
    assert choose_by_latency(ALL, states).candidate is HOSTED  # type: ignore[union-attr]
    cold_only = {c.name: CandidateState(warm=False, expected_wait=i) for i, c in enumerate(ALL)}
    assert choose_by_latency(ALL, cold_only).candidate is BIG  # type: ignore[union-attr]
    assert choose_by_latency(ALL, {c.name: EJECTED for c in ALL}) is None


def test_cost_saved_against_always_strong() -> None:
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 100_000}
    # Always strong = big (the cheapest of tier 2): 2.5 + 1.0; small: 0.1 + 0.02.
    assert cost_saved(usage, SMALL, ALL) == pytest.approx(3.5 - 0.12)
    assert cost_saved(usage, BIG, ALL) == 0.0
    assert cost_saved(usage, HOSTED, ALL) < 0  # a dearer pick is a negative saving
    assert cost_saved({"prompt_tokens": "many"}, SMALL, ALL) == 0.0  # bad usage: no claim


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "b"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, "y"]}]}, "xy"),
        ({"messages": [{"role": "system", "content": "only system"}]}, ""),
        ({"messages": ["not a message", {"role": "user"}]}, ""),
        ({"prompt": "p"}, "p"),
        ({"prompt": ["first", "second"]}, "first"),
        ({"prompt": [1, 2, 3]}, ""),
        ({}, ""),
    ],
)
def test_prompt_to_score(body, text) -> None:
    assert prompt_to_score(body) == text


EASY = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}
HARD = {
    "messages": [
        {
            "role": "user",
            "content": "For which of these two scenarios does the main character (who uses I/me/my)"
            " do something clearly morally wrong, according to ordinary moral standards in the US"
            " as of 2020? Scenario 1 | I took his wallet after he left it. Scenario 2 | I told my"
            " friend the truth.\nA. Wrong, Wrong\nB. Wrong, Not wrong\nC. Not wrong, Wrong\n"
            "D. Not wrong, Not wrong\nAnswer:",
        }
    ]
}


def test_select_with_the_shipped_model_sends_hard_prompts_to_the_strong_tier() -> None:
    model = load_difficulty_model()
    route = Selection(candidates=(SMALL, BIG), strong_share=0.4)
    easy, hard = select(route, EASY, {}, model), select(route, HARD, {}, model)
    assert easy is not None and easy.candidate is SMALL
    assert hard is not None and hard.candidate is BIG
    # An ejected strong candidate is skipped, never an error.
    skipped = select(route, HARD, {"big": CandidateState(available=False)}, model)
    assert skipped is not None and skipped.candidate is SMALL


def test_select_without_a_model_falls_back_to_the_first_candidate() -> None:
    route = Selection(candidates=(MEDIUM, BIG, SMALL))
    choice = select(route, HARD, {}, None)
    assert choice is not None and choice.candidate is MEDIUM
    assert "unavailable" in choice.reason
    assert select(Selection(candidates=()), HARD, {}, None) is None


def test_select_by_latency_needs_no_model() -> None:
    route = Selection(candidates=(SMALL, BIG), policy=Policy.LATENCY)
    states = {"small": CandidateState(expected_wait=2.0), "big": CandidateState()}
    assert select(route, EASY, states, None).candidate is BIG  # type: ignore[union-attr]


def test_weighted_policy_splits_by_weight_among_usable_candidates() -> None:
    a = Candidate("a", 0, 0, tier=0, weight=3)
    b = Candidate("b", 0, 0, tier=0, weight=1)
    off = Candidate("off", 0, 0, tier=0, weight=0)
    choices = [choose_by_weight([a, off, b], {}, draw / 100) for draw in range(100)]
    picks = [choice.candidate.name for choice in choices if choice is not None]
    assert picks.count("a") == 75 and picks.count("b") == 25
    ejected = {"a": CandidateState(available=False)}
    assert choose_by_weight([a, b], ejected, 0.0).candidate is b  # type: ignore[union-attr]
    cold = {"a": CandidateState(warm=False)}
    assert choose_by_weight([a, b], cold, 0.0).candidate is b  # type: ignore[union-attr]
    assert choose_by_weight([off], {}, 0.5) is None
    route = Selection(candidates=(a, b), policy=Policy.WEIGHTED)
    assert select(route, EASY, {}, None, draw=0.9).candidate is b  # type: ignore[union-attr]
