"""Choosing a route's candidate model per request: the cost and latency policies (pure).

A selecting route lists candidates (self-hosted models and provider models, each a name in
the routing table), each with prices per million tokens and a quality tier (higher: stronger).
The ``cost`` policy sends a prompt whose difficulty score (``router/difficulty.py``) reaches
the route's threshold to the strongest tier and the rest to the weakest, then takes the
cheapest candidate of at least that tier. The ``latency`` policy takes the lowest predicted
time to first token. Availability comes first in both: ejected candidates and candidates over
their spend cap are skipped, and a cold candidate (no ready replica) is taken only when no warm
one qualifies, so a model at zero never holds a request a warm alternative can serve. When
nothing qualifies at the needed tier, the best available lower tier serves: an answer from a
weaker model beats none.

Pure: no I/O, no clock; the stage passes the live state in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from inferscale.router.difficulty import DifficultyModel
from inferscale.router.picking import message_text
from inferscale.router.spend import cost


class Policy(StrEnum):
    """How a selecting route chooses among its candidates."""

    COST = "cost"
    LATENCY = "latency"
    WEIGHTED = "weighted"


@dataclass(frozen=True)
class Candidate:
    """One model a selecting route may send a request to."""

    name: str
    input_price: float
    output_price: float
    tier: int
    weight: int = 1


@dataclass(frozen=True)
class CandidateState:
    """What the router knows about a candidate when a request arrives."""

    available: bool = True
    """False when ejected (no healthy endpoint or provider) or over its spend cap."""
    warm: bool = True
    """False when it has no ready replica now (a provider is always warm)."""
    expected_wait: float = 0.0
    """The latency policy's estimate of the time to first token, relative (lower: sooner).
    The stage passes the requests in flight on the candidate's least busy replica (0 for a
    provider); observed provider latency is not measured into it yet."""


@dataclass(frozen=True)
class Choice:
    """The chosen candidate and why (the reason goes to the access log and metrics)."""

    candidate: Candidate
    reason: str


def _cheapest(candidates: Sequence[Candidate]) -> Candidate:
    # Output tokens usually dominate a chat answer's price; input breaks ties.
    return min(candidates, key=lambda c: (c.output_price + c.input_price, c.output_price))


def _usable(
    candidates: Sequence[Candidate], states: dict[str, CandidateState]
) -> tuple[list[Candidate], list[Candidate]]:
    """(warm, cold) candidates that are available; a candidate with no state is available."""
    available = [c for c in candidates if states.get(c.name, CandidateState()).available]
    warm = [c for c in available if states.get(c.name, CandidateState()).warm]
    return warm, [c for c in available if c not in warm]


def choose_by_cost(
    candidates: Sequence[Candidate],
    states: dict[str, CandidateState],
    score: float,
    threshold: float,
) -> Choice | None:
    """The cheapest usable candidate whose tier is enough for a prompt of ``score``."""
    if not candidates:
        return None
    needed = (
        max(c.tier for c in candidates) if score >= threshold else min(c.tier for c in candidates)
    )
    warm, cold = _usable(candidates, states)
    for pool, label in ((warm, "warm"), (cold, "cold")):
        enough = [c for c in pool if c.tier >= needed]
        if enough:
            return Choice(_cheapest(enough), f"cheapest {label} candidate of tier >= {needed}")
    usable = warm or cold
    if not usable:
        return None
    best = max(c.tier for c in usable)
    weaker = _cheapest([c for c in usable if c.tier == best])
    return Choice(weaker, f"no usable candidate of tier >= {needed}: best available tier {best}")


def choose_by_latency(
    candidates: Sequence[Candidate], states: dict[str, CandidateState]
) -> Choice | None:
    """The usable candidate with the lowest predicted time to first token, warm ones first."""
    warm, cold = _usable(candidates, states)
    pool = warm or cold
    if not pool:
        return None
    fastest = min(pool, key=lambda c: states.get(c.name, CandidateState()).expected_wait)
    return Choice(fastest, "lowest predicted time to first token")


def choose_by_weight(
    candidates: Sequence[Candidate], states: dict[str, CandidateState], draw: float
) -> Choice | None:
    """A candidate in proportion to its weight, ``draw`` uniform in [0, 1): an A/B split.

    Usable warm candidates share the traffic; cold ones only when no warm one has a weight.
    """
    warm, cold = _usable(candidates, states)
    for pool in (warm, cold):
        weighted = [c for c in pool if c.weight > 0]
        total = sum(c.weight for c in weighted)
        if not total:
            continue
        mark = draw * total
        for candidate in weighted:
            mark -= candidate.weight
            if mark < 0:
                return Choice(candidate, f"weight {candidate.weight} of {total}")
        return Choice(weighted[-1], f"weight {weighted[-1].weight} of {total}")
    return None


def cost_saved(usage: object, chosen: Candidate, candidates: Sequence[Candidate]) -> float:
    """What ``usage`` would have cost on the strongest candidate, minus what it cost here.

    The strongest tier's cheapest candidate is "always strong", the baseline the issue names;
    negative when the chosen candidate costs more (a latency pick, or a fallback).
    """
    strongest_tier = max(c.tier for c in candidates)
    baseline = _cheapest([c for c in candidates if c.tier == strongest_tier])
    return cost(usage, baseline.input_price, baseline.output_price) - cost(
        usage, chosen.input_price, chosen.output_price
    )


@dataclass(frozen=True)
class Selection:
    """A selecting route's settings: its candidates (the first is the fallback) and policy."""

    candidates: tuple[Candidate, ...]
    policy: Policy = Policy.COST
    strong_share: float = 0.4
    """The cost policy's target share of prompts sent to the strongest tier (0..1), as
    calibrated on the difficulty model's training prompts (bench/selection prints it)."""


def prompt_to_score(body: Mapping[str, Any]) -> str:
    """The text whose difficulty decides: the last user message, or a completion's prompt.

    The last user message is the one being answered; earlier turns are context the model
    already handled. Token-id prompts and unknown shapes give the empty string (scored as a
    short, easy prompt).
    """
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, Mapping) and message.get("role") == "user":
                return message_text(message.get("content"))
        return ""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        prompt = prompt[0]
    return prompt if isinstance(prompt, str) else ""


def select(
    selection: Selection,
    body: Mapping[str, Any],
    states: dict[str, CandidateState],
    model: DifficultyModel | None,
    draw: float = 0.0,
) -> Choice | None:
    """The candidate for one request; ``None`` when no candidate is usable.

    Without a difficulty model (its artefact failed to load) the cost policy cannot judge a
    prompt, so the route serves from its first candidate, as documented: a known model and
    price rather than an error. The caller reports the missing model as a condition.
    """
    if not selection.candidates:
        return None
    if selection.policy is Policy.LATENCY:
        return choose_by_latency(selection.candidates, states)
    if selection.policy is Policy.WEIGHTED:
        return choose_by_weight(selection.candidates, states, draw)
    if model is None:
        return Choice(selection.candidates[0], "difficulty model unavailable: first candidate")
    score = model.score(prompt_to_score(body))
    threshold = model.threshold_for_share(selection.strong_share)
    return choose_by_cost(selection.candidates, states, score, threshold)
