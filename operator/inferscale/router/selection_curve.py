"""The quality curve of a strong/weak model router, and RouteLLM's summary figures of it.

Pure numpy, no I/O: ``bench/selection`` and users' own ``--data`` files both go through it.
A router scores each prompt; sending the share ``s`` of the highest-scoring prompts to the
strong model gives a correctness ``acc(s)``. PGR(s) (performance gap recovered) is
``(acc(s) - acc_weak) / (acc_strong - acc_weak)``; APGR is its area over ``s`` in [0, 1];
CPT(x) is the smallest share of strong calls whose PGR reaches ``x`` (RouteLLM, Ong et al. 2024).
The random router's expected curve is the straight line between the two models (APGR 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class RoutingCurve:
    """Correctness at every share of strong calls, for one router on one labelled set.

    ``correct[k]`` is the share of prompts answered correctly when the ``k`` highest-scoring
    prompts go to the strong model (``k`` = 0 .. n), so ``shares[k] = k / n``.
    """

    shares: FloatArray
    correct: FloatArray
    weak: float
    strong: float

    @property
    def pgr(self) -> FloatArray:
        """Performance gap recovered at each share (0 = weak alone, 1 = strong alone)."""
        gap = self.strong - self.weak
        if gap <= 0:
            # No gap to recover: every router is as good as the strong model.
            return np.ones_like(self.correct)
        return (self.correct - self.weak) / gap

    def apgr(self) -> float:
        """Area under PGR over shares 0..1 (the random router's expectation is 0.5)."""
        pgr = self.pgr
        widths = np.diff(self.shares)
        return float(np.sum(widths * (pgr[1:] + pgr[:-1]) / 2.0))

    def cpt(self, recovered: float) -> float:
        """The smallest share of strong calls whose PGR reaches ``recovered`` (0..1)."""
        reached = np.nonzero(self.pgr >= recovered - 1e-12)[0]
        return float(self.shares[reached[0]]) if reached.size else 1.0

    def correct_at(self, share: float) -> float:
        """Correctness with ``share`` (0..1) of prompts sent to the strong model."""
        return float(np.interp(share, self.shares, self.correct))


def routing_curve(scores: FloatArray, weak_ok: BoolArray, strong_ok: BoolArray) -> RoutingCurve:
    """The curve of a router that sends the highest ``scores`` to the strong model first.

    Ties are broken by input order (a stable sort), so equal scores give one fixed curve.
    """
    if not (len(scores) == len(weak_ok) == len(strong_ok)) or len(scores) == 0:
        raise ValueError("scores, weak_ok and strong_ok need the same non-zero length")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    weak = np.asarray(weak_ok, dtype=np.float64)
    gain = np.asarray(strong_ok, dtype=np.float64) - weak
    n = len(scores)
    correct = (weak.sum() + np.concatenate(([0.0], np.cumsum(gain[order])))) / n
    return RoutingCurve(
        shares=np.arange(n + 1, dtype=np.float64) / n,
        correct=correct,
        weak=float(weak.mean()),
        strong=float(np.mean(strong_ok)),
    )


def random_curve(weak_ok: BoolArray, strong_ok: BoolArray) -> RoutingCurve:
    """The random router's expected curve: linear from the weak model to the strong one."""
    n = len(weak_ok)
    if n == 0 or len(strong_ok) != n:
        raise ValueError("weak_ok and strong_ok need the same non-zero length")
    shares = np.arange(n + 1, dtype=np.float64) / n
    weak, strong = float(np.mean(weak_ok)), float(np.mean(strong_ok))
    return RoutingCurve(
        shares=shares, correct=weak + shares * (strong - weak), weak=weak, strong=strong
    )


def oracle_scores(weak_ok: BoolArray, strong_ok: BoolArray) -> FloatArray:
    """Scores of the oracle: strong first exactly where it alone is right, weak-only last."""
    return np.asarray(strong_ok, dtype=np.float64) - np.asarray(weak_ok, dtype=np.float64)
