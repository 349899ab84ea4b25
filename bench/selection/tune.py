#!/usr/bin/env python3
"""Choose train.py's L2 penalty and length weight by cross-validation over TRAINING subjects.

The held-out subjects of the split (``--held-out``, ``--seed``: the ones ``run_bench.py``
reports on) are dropped before anything else and never read again. The training subjects are
shuffled into ``--folds`` groups (once per ``--cv-seeds``); each group in turn is scored by the
heads fitted on the others, for every ``--l2s`` penalty, and the gain is blended with prompt
length at every ``--length-weights`` (0: the gain alone; 1: length alone), as train.py does.
Prints, per (L2, weight), the mean APGR over the folds, its range and the mean CPT(50 %),
then the pick: the highest mean APGR. Writes nothing.

  .venv/bin/python bench/selection/tune.py                 # ~10 min on a busy 2-vCPU VM
  .venv/bin/python bench/selection/tune.py --l2s 1e-3 3e-2 --length-weights 0 0.5 --folds 4
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as train.py: exact, repeatable sums

import argparse
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import DEFAULT_MMLU, DataError, Labelled, read_mmlu, split_subjects
from train import fit_heads, length_blend, raw_gains

from inferscale.router.difficulty import feature_matrix, prompt_length
from inferscale.router.selection_curve import routing_curve

Matrix = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


def subject_folds(subjects: list[str], folds: int, seeds: list[int]) -> Iterator[Mask]:
    """One mask of validation rows per fold: whole subjects, shuffled once per seed."""
    names = sorted(set(subjects))
    rows = np.array(subjects)
    for seed in seeds:
        shuffled = list(names)
        random.Random(seed).shuffle(shuffled)
        for fold in range(folds):
            yield np.isin(rows, shuffled[fold::folds])


def fold_figures(
    data: Labelled, raw: Matrix, validation: Mask, args: argparse.Namespace
) -> dict[tuple[float, float], tuple[float, float]]:
    """(L2, length weight) -> (APGR, CPT(50 %)) on one fold's validation subjects."""
    fitting, held = data.subset(~validation), data.subset(validation)
    lengths = np.array([prompt_length(text) for text in held.prompts])
    figures = {}
    for l2 in args.l2s:
        model = fit_heads(raw[~validation], fitting, args.buckets, l2, args.steps)
        fitted_gains = raw_gains(model, raw[~validation])
        gains = raw_gains(model, raw[validation])
        for weight in args.length_weights:
            blend = length_blend(fitted_gains, fitting.prompts, weight)
            # LengthBlend.combine, for every prompt at once.
            scores = (1.0 - weight) * np.interp(
                gains, blend.gain_points, blend.gain_shares
            ) + weight * np.interp(lengths, blend.length_points, blend.length_shares)
            curve = routing_curve(scores, held.weak_ok, held.strong_ok)
            figures[(l2, weight)] = (curve.apgr(), curve.cpt(0.5))
    return figures


def main(argv: list[str] | None = None) -> int:
    """Print the cross-validation table and the pick."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mmlu", type=Path, default=DEFAULT_MMLU)
    parser.add_argument("--held-out", type=int, default=19, help="as train.py and run_bench.py")
    parser.add_argument("--seed", type=int, default=0, help="as train.py and run_bench.py")
    parser.add_argument("--folds", type=int, default=5, help="subject groups per shuffle")
    parser.add_argument("--cv-seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--l2s", type=float, nargs="+", default=[1e-3, 1e-2, 3e-2, 1e-1])
    parser.add_argument(
        "--length-weights", type=float, nargs="+", default=[0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0]
    )
    parser.add_argument("--buckets", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args(argv)
    if args.folds < 2 or not all(0.0 <= weight <= 1.0 for weight in args.length_weights):
        parser.error("--folds must be 2+ and --length-weights in 0..1")
    try:
        data = read_mmlu(args.mmlu)
        training, _ = split_subjects(data.subjects, args.held_out, args.seed)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # The held-out subjects go here, before any feature is computed, and are never seen again.
    data = data.subset(np.array([subject in training for subject in data.subjects]))
    raw = feature_matrix(data.prompts, args.buckets)
    runs: dict[tuple[float, float], list[tuple[float, float]]] = {}
    for number, validation in enumerate(subject_folds(data.subjects, args.folds, args.cv_seeds)):
        for key, figure in fold_figures(data, raw, validation, args).items():
            runs.setdefault(key, []).append(figure)
        print(f"done: fold {number + 1}", file=sys.stderr, flush=True)
    print(
        f"{len(training)} training subjects (--held-out {args.held_out} --seed {args.seed} left"
        f" out), {args.folds} folds x seeds {args.cv_seeds}"
    )
    print("| L2 | length weight | mean APGR | range | mean CPT(50 %) |")
    print("|---:|---:|---:|---|---:|")
    for (l2, weight), rows in runs.items():
        apgr = np.array([row[0] for row in rows])
        cpt = np.array([row[1] for row in rows])
        print(
            f"| {l2:g} | {weight:g} | {apgr.mean():.3f} | {apgr.min():.3f}-{apgr.max():.3f}"
            f" | {cpt.mean():.1%} |"
        )
    best = max(runs, key=lambda key: float(np.mean([row[0] for row in runs[key]])))
    print(f"pick (highest mean APGR): --l2 {best[0]:g} --length-weight {best[1]:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
