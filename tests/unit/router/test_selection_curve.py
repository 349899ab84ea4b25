"""The routing curve and RouteLLM's figures: hand-computed cases and the baselines' shapes."""

from __future__ import annotations

import numpy as np
import pytest

from inferscale.router.selection_curve import (
    oracle_scores,
    random_curve,
    routing_curve,
)

# Four prompts: strong alone right on 0, both right on 1, both wrong on 2, weak alone on 3.
WEAK = np.array([False, True, False, True])
STRONG = np.array([True, True, False, False])


def test_curve_sends_highest_scores_first() -> None:
    curve = routing_curve(np.array([0.9, 0.1, 0.2, 0.0]), WEAK, STRONG)
    # 0 strong: weak gets 2/4; prompt 0 strong: 3/4; then 2 (no change); then 1; then 3 (loss).
    assert curve.correct.tolist() == [0.5, 0.75, 0.75, 0.75, 0.5]
    assert curve.weak == 0.5 and curve.strong == 0.5


def test_pgr_apgr_and_cpt_by_hand() -> None:
    weak = np.array([False, False, True, True])
    strong = np.array([True, True, True, True])
    curve = routing_curve(np.array([4.0, 3.0, 2.0, 1.0]), weak, strong)
    assert curve.pgr.tolist() == [0.0, 0.5, 1.0, 1.0, 1.0]
    # Trapezoids of width 1/4 with mean heights 0.25, 0.75, 1 and 1.
    assert curve.apgr() == pytest.approx(3.0 / 4)
    assert curve.cpt(0.5) == 0.25 and curve.cpt(0.8) == 0.5
    assert curve.correct_at(0.125) == pytest.approx(0.5 + 0.125)


def test_random_router_is_the_straight_line() -> None:
    rng = np.random.default_rng(3)
    weak = rng.random(500) < 0.6
    strong = rng.random(500) < 0.8
    curve = random_curve(weak, strong)
    assert curve.apgr() == pytest.approx(0.5)
    assert curve.cpt(0.5) == pytest.approx(0.5, abs=0.01)


def test_oracle_beats_every_router() -> None:
    rng = np.random.default_rng(4)
    weak = rng.random(400) < 0.6
    strong = rng.random(400) < 0.8
    oracle = routing_curve(oracle_scores(weak, strong), weak, strong)
    for _ in range(5):
        other = routing_curve(rng.random(400), weak, strong)
        assert np.all(oracle.correct >= other.correct - 1e-12)
    assert oracle.apgr() > 1.0  # it also drops the prompts only the weak model gets right


def test_no_gap_counts_as_fully_recovered() -> None:
    same = np.array([True, False])
    curve = routing_curve(np.array([1.0, 0.0]), same, same)
    assert curve.apgr() == 1.0 and curve.cpt(0.8) == 0.0


@pytest.mark.parametrize(
    ("scores", "weak", "strong"),
    [
        (np.array([]), np.array([], dtype=bool), np.array([], dtype=bool)),
        (np.array([1.0]), np.array([True, False]), np.array([True, False])),
    ],
)
def test_mismatched_or_empty_inputs_are_refused(scores, weak, strong) -> None:
    with pytest.raises(ValueError, match="same non-zero length"):
        routing_curve(scores, weak, strong)
    if len(weak) != len(strong) or not len(weak):
        with pytest.raises(ValueError):
            random_curve(weak, np.array([True]))
