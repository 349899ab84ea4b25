#!/usr/bin/env python3
"""bench/cache: how right the response cache's hits are, and what it costs per request.

Quality (the default): the STS-B pairs (``../shared/data/semantic-cache/``, read in place), a
score of 4 or more meaning the same. For each encoder (the static one the router serves with,
the full all-MiniLM-L6-v2 transformer for comparison, and exact matching of the normalised
text) the precision and recall of hits at each threshold on train, dev and test; the threshold
chosen on dev alone (the lowest whose precision, and every higher one's, is >= 0.95); then the
test pairs, never used for tuning, at the chosen and at the shipped threshold, PASS or FAIL.

  .venv/bin/python bench/cache/run_bench.py                    # quality, ~1 min (full: + ~2 min)
  .venv/bin/python bench/cache/run_bench.py --no-full          # the static encoder only
  .venv/bin/python bench/cache/run_bench.py --pairs FILE       # your pairs, shipped settings
  .venv/bin/python bench/cache/run_bench.py --latency          # per-request cost, one core

``--pairs FILE`` (JSON lines or CSV of text_a, text_b, label; label 1 = same meaning) tunes
nothing: it scores the shipped encoder at the shipped threshold (or ``--threshold``) and prints
precision and recall as its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pairs import (
    TARGET_PRECISION,
    Pair,
    PairsError,
    Score,
    choose,
    read_pairs,
    read_stsb,
    sweep,
)

from inferscale.protocol.defaults import CACHE_SIMILARITY_THRESHOLD
from inferscale.router.response_cache import normalise

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "semantic-cache"
THRESHOLDS = [round(0.50 + 0.01 * i, 2) for i in range(50)]
SHOWN = [round(0.60 + 0.02 * i, 2) for i in range(20)]
"""Thresholds printed in the table (every one of THRESHOLDS is swept)."""


def similarities(encoder: Any, pairs: Sequence[Pair]) -> list[float]:
    """Cosine similarity of each pair (rows are L2-normalised: a dot product)."""
    a = encoder.encode([p.text_a for p in pairs])
    b = encoder.encode([p.text_b for p in pairs])
    return [float(x) for x in np.einsum("ij,ij->i", a, b)]


def exact_similarities(pairs: Sequence[Pair]) -> list[float]:
    """1 where the normalised texts are equal (the exact layer), else 0."""
    return [float(normalise(p.text_a) == normalise(p.text_b)) for p in pairs]


def load_split(name: str) -> list[Pair]:
    return read_stsb(DATA / f"stsb-en-{name}.csv")


def row(name: str, split: str, s: Score) -> str:
    return (
        f"| {name} | {split} | {s.threshold:.2f} | {s.hits} | {s.precision:.3f} | {s.recall:.3f} |"
    )


def evaluate(name: str, sims: dict[str, list[float]], same: dict[str, list[bool]]) -> Score:
    """Print the sweep of one encoder; return its test score at the threshold chosen on dev."""
    thresholds = [1.0] if name == "exact" else THRESHOLDS
    table = {split: sweep(sims[split], same[split], thresholds) for split in sims}
    print(f"\n### {name}\n")
    print("| encoder | split | threshold | hits | precision | recall |")
    print("|---|---|---:|---:|---:|---:|")
    shown = thresholds if name == "exact" else SHOWN
    for split in ("train", "dev", "test"):
        for s in table[split]:
            if any(abs(s.threshold - t) < 1e-9 for t in shown):
                print(row(name, split, s))
    chosen = choose(table["dev"]) if name != "exact" else table["dev"][0]
    if chosen is None:
        print(f"{name}: no threshold reaches precision {TARGET_PRECISION} on dev")
        return Score(1.01, 0, 0, sum(same["test"]))
    test = next(s for s in table["test"] if s.threshold == chosen.threshold)
    verdict = "PASS" if test.precision >= TARGET_PRECISION else "FAIL"
    print(
        f"\n{name}: threshold {chosen.threshold:.2f} chosen on dev (precision "
        f"{chosen.precision:.3f}, recall {chosen.recall:.3f}); test: precision "
        f"{test.precision:.3f}, recall {test.recall:.3f}, {test.hits} hits: {verdict}"
    )
    return test


def quality(full: bool) -> int:
    from inferscale.embedding.sentence import load_sentence_encoder
    from inferscale.embedding.store import load_static_encoder

    splits = {name: load_split(name) for name in ("train", "dev", "test")}
    same = {name: [p.same for p in pairs] for name, pairs in splits.items()}
    print(
        "STS-B pairs (score >= 4: same meaning): "
        + ", ".join(f"{n} {len(p)} ({sum(same[n])} same)" for n, p in splits.items())
    )
    encoders: list[tuple[str, Callable[[], Any]]] = [("static", load_static_encoder)]
    if full:
        encoders.append(("full", load_sentence_encoder))
    failed = 0
    for name, load in encoders:
        encoder = load()
        started = time.perf_counter()
        sims = {split: similarities(encoder, pairs) for split, pairs in splits.items()}
        took = time.perf_counter() - started
        print(f"\n{name}: {encoder.name}, dim {encoder.dim}, encoded in {took:.1f} s")
        test = evaluate(name, sims, same)
        paraphrase_recall(name, encoder, test.threshold)
        if name == "static":
            failed += shipped_row(sims["test"], same["test"])
            paraphrase_recall(name, encoder, CACHE_SIMILARITY_THRESHOLD)
        failed += test.precision < TARGET_PRECISION
    evaluate("exact", {s: exact_similarities(p) for s, p in splits.items()}, same)
    return 1 if failed else 0


def paraphrase_recall(name: str, encoder: Any, threshold: float) -> None:
    """Recall on GPTCache's made-up paraphrases (positives only: no precision to show)."""
    doc = json.loads((DATA / "gptcache_mock_data.json").read_text(encoding="utf-8"))
    pairs = [Pair(d["origin"], d["similar"], True) for d in doc]
    (s,) = sweep(similarities(encoder, pairs), [True] * len(pairs), [threshold])
    print(
        f"{name} on GPTCache's {len(pairs)} paraphrase pairs at {threshold:.2f}: recall "
        f"{s.recall:.3f} ({s.hits} hits)"
    )


def shipped_row(sims: list[float], same: list[bool]) -> int:
    (s,) = sweep(sims, same, [CACHE_SIMILARITY_THRESHOLD])
    verdict = "PASS" if s.precision >= TARGET_PRECISION else "FAIL"
    print(
        f"static at the shipped threshold {CACHE_SIMILARITY_THRESHOLD:.2f} "
        f"(protocol/defaults.py), test: precision {s.precision:.3f}, recall {s.recall:.3f}, "
        f"{s.hits} hits: {verdict}"
    )
    return int(s.precision < TARGET_PRECISION)


def check_pairs(path: Path, threshold: float) -> int:
    """Score the shipped encoder at ``threshold`` on a user's pairs; no tuning."""
    from inferscale.embedding import EmbeddingUnavailable
    from inferscale.embedding.store import load_static_encoder

    try:
        pairs = read_pairs(path)
    except PairsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        encoder = load_static_encoder()
    except EmbeddingUnavailable as error:
        print(f"error: the embedding model did not load: {error}", file=sys.stderr)
        return 2
    same = [p.same for p in pairs]
    (s,) = sweep(similarities(encoder, pairs), same, [threshold])
    print(
        f"{len(pairs)} pairs ({sum(same)} same meaning); {encoder.name}; threshold "
        f"{threshold:.2f}: {s.hits} hits, {s.right} right"
    )
    print(f"precision {s.precision:.3f} recall {s.recall:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=Path, help="score your own pairs (no tuning)")
    parser.add_argument("--threshold", type=float, default=CACHE_SIMILARITY_THRESHOLD)
    parser.add_argument("--no-full", action="store_true", help="skip the full transformer")
    parser.add_argument("--latency", action="store_true", help="per-request cost, one core")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (--latency)")
    args = parser.parse_args(argv)
    if args.pairs is not None:
        if not 0.0 < args.threshold <= 1.0:
            parser.error("--threshold must be in (0, 1]")
        return check_pairs(args.pairs, args.threshold)
    if args.latency:
        from latency import run_latency

        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
        splits = [pair for name in ("train", "dev", "test") for pair in load_split(name)]
        return asyncio.run(run_latency(splits))
    return quality(full=not args.no_full)


if __name__ == "__main__":
    sys.exit(main())
