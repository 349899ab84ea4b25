#!/usr/bin/env python3
"""Model selection on held-out MMLU subjects: the shipped difficulty model against baselines.

Prints the cost policy's curve (correctness at each share of strong calls) for the random
router (its expectation: the straight line), the longest-prompt router, the shipped classifier
(``operator/inferscale/router/difficulty.json``, written by ``train.py``) and the oracle, then
APGR, CPT(50 %), CPT(80 %), the targets of issue 22 with pass/fail, the threshold a user would
ship (calibrated on the training subjects) and the classifier's added latency on a
1,000-token prompt. Data is read in place from ``../shared/data/routing-quality`` (licences:
``../shared/data/README.md``).

  .venv/bin/python bench/selection/run_bench.py                    # held-out MMLU subjects
  .venv/bin/python bench/selection/run_bench.py --data my.csv      # your traffic; APGR last
  .venv/bin/python bench/selection/run_bench.py --data f.csv --weak small-model --strong big-model
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # "on one core", as the latency target says

import argparse
import hashlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import (
    DEFAULT_MMLU,
    DataError,
    Labelled,
    read_labelled,
    read_mmlu,
    split_subjects,
    subject_mean_gain,
)

from inferscale.router.difficulty import (
    DEFAULT_ARTEFACT,
    WORD,
    DifficultyModel,
    DifficultyModelUnavailable,
    load_difficulty_model,
)
from inferscale.router.selection_curve import (
    RoutingCurve,
    oracle_scores,
    random_curve,
    routing_curve,
)

TARGET_APGR = 0.62
TARGET_CPT50 = 0.30
TABLE_SHARES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
LATENCY_TOKENS = 1000


def curves(model: DifficultyModel, data: Labelled) -> dict[str, RoutingCurve]:
    """The routers' curves on ``data``: with a length blend, the gain alone is shown too."""
    scores = np.array([model.score(text) for text in data.prompts])
    lengths = np.array([len(text) for text in data.prompts], dtype=np.float64)
    parts = {}
    if model.blend is not None:
        gains = np.array([model.gain(text) for text in data.prompts])
        parts["gain alone"] = routing_curve(gains, data.weak_ok, data.strong_ok)
    return {
        "random": random_curve(data.weak_ok, data.strong_ok),
        "longest prompt": routing_curve(lengths, data.weak_ok, data.strong_ok),
        **parts,
        "classifier": routing_curve(scores, data.weak_ok, data.strong_ok),
        "oracle": routing_curve(
            oracle_scores(data.weak_ok, data.strong_ok), data.weak_ok, data.strong_ok
        ),
    }


def print_table(table: dict[str, RoutingCurve], data: Labelled) -> None:
    """Correctness at each share of strong calls, then the summary figures per router."""
    print(
        f"{len(data.prompts)} prompts; weak {data.weak_name} right on {data.weak_ok.mean():.1%},"
        f" strong {data.strong_name} right on {data.strong_ok.mean():.1%}"
    )
    names = list(table)
    print("strong calls  " + "".join(f"{name:>16}" for name in names))
    for share in TABLE_SHARES:
        cells = "".join(f"{table[name].correct_at(share):>16.1%}" for name in names)
        print(f"{share:>12.0%}  {cells}")
    for label, figure in (
        ("APGR", lambda c: f"{c.apgr():.3f}"),
        ("CPT(50%)", lambda c: f"{c.cpt(0.5):.1%}"),
        ("CPT(80%)", lambda c: f"{c.cpt(0.8):.1%}"),
    ):
        print(f"{label:>12}  " + "".join(f"{figure(table[name]):>16}" for name in names))


def shipped_threshold(model: DifficultyModel, training: Labelled, held_out: Labelled) -> None:
    """The share a user would ship: CPT(80 %) on the training subjects, and what it gives."""
    trained = curves(model, training)["classifier"]
    share = round(trained.cpt(0.8) / 0.05) * 0.05  # the calibration's 5 % grid
    cut = model.threshold_for_share(share)
    scores = np.array([model.score(text) for text in held_out.prompts])
    strong = scores >= cut
    reached = np.where(strong, held_out.strong_ok, held_out.weak_ok).mean()
    gap = held_out.strong_ok.mean() - held_out.weak_ok.mean()
    print(
        f"shipped threshold: strongShare {share:.2f} (CPT(80%) on the training subjects)"
        f" = score >= {cut:+.4f}; on held-out subjects it sends {strong.mean():.1%} to the"
        f" strong model, correctness {reached:.1%},"
        f" PGR {(reached - held_out.weak_ok.mean()) / gap:.2f}"
    )


def latency_prompt(prompts: list[str]) -> str:
    """A prompt of at least 1,000 tokens (words and punctuation), made of real prompts."""
    text = ""
    for prompt in prompts:
        text += prompt + "\n"
        if len(WORD.findall(text.lower())) >= LATENCY_TOKENS:
            return text
    raise DataError("not enough text for a 1,000-token prompt")


def median_ms(call: Callable[[], object], repeats: int = 200) -> float:
    """Median wall time of ``call`` in milliseconds."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def held_out_report(model: DifficultyModel, args: argparse.Namespace) -> None:
    """The MMLU report on the held-out subjects."""
    data = read_mmlu(args.mmlu)
    training, held_out = split_subjects(data.subjects, args.held_out, args.seed)
    if ", ".join(sorted(held_out)) not in model.trained_on:
        print("WARNING: the artefact was trained with other held-out subjects than these")
    held = data.subset(np.array([subject in held_out for subject in data.subjects]))
    train = data.subset(np.array([subject in training for subject in data.subjects]))
    print(f"held out (--seed {args.seed}, {len(held_out)} subjects): {', '.join(sorted(held_out))}")
    table = curves(model, held)
    # Not a router (it reads the held-out labels): the best a subject-level score could do.
    table["subject oracle"] = routing_curve(subject_mean_gain(held), held.weak_ok, held.strong_ok)
    print_table(table, held)
    ours = table["classifier"]
    for label, value, target, ok in (
        ("APGR", f"{ours.apgr():.3f}", f">= {TARGET_APGR}", ours.apgr() >= TARGET_APGR),
        (
            "CPT(50%)",
            f"{ours.cpt(0.5):.1%}",
            f"<= {TARGET_CPT50:.0%}",
            ours.cpt(0.5) <= TARGET_CPT50,
        ),
    ):
        print(f"target {label} {target}: {value} {'PASS' if ok else 'FAIL'}")
    shipped_threshold(model, train, held)
    text = latency_prompt(held.prompts)
    tokens = len(WORD.findall(text.lower()))
    print(
        f"added latency: median {median_ms(lambda: model.score(text)):.2f} ms for a"
        f" {tokens}-token prompt ({len(text)} chars) on one core (target <= 5 ms)"
    )


def main(argv: list[str] | None = None) -> int:
    """Report on held-out MMLU subjects, or on ``--data``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a CSV: prompt + one True/False column per model")
    parser.add_argument("--weak", help="the --data column of the cheap model (default: less right)")
    parser.add_argument("--strong", help="the --data column of the strong model")
    parser.add_argument("--model", type=Path, default=DEFAULT_ARTEFACT, help="the artefact")
    parser.add_argument("--mmlu", type=Path, default=DEFAULT_MMLU, help="the mmlu_*.csv folder")
    parser.add_argument("--held-out", type=int, default=19, help="as train.py was run")
    parser.add_argument("--seed", type=int, default=0, help="as train.py was run")
    args = parser.parse_args(argv)
    try:
        model = load_difficulty_model(args.model)
        # Names the bytes measured: the router loads the same file (its package data).
        digest = hashlib.sha256(args.model.read_bytes()).hexdigest()
        print(f"artefact {args.model.name} sha256 {digest[:16]} ({model.trained_on[:60]}...)")
        if args.data is None:
            held_out_report(model, args)
            return 0
        data = read_labelled(args.data, weak=args.weak, strong=args.strong)
        table = curves(model, data)
        print_table(table, data)
        print(f"APGR {table['classifier'].apgr():.3f}")
        return 0
    except (DataError, DifficultyModelUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
