"""``inferscale embedding``: build the static embedding table, and compare two texts with it.

``build`` distils the router's static table from the installed model package (a few minutes on
one core; ``make embedding`` and the router image run it once). ``similarity`` prints the cosine
similarity of two texts under both encoders, so a user can see what the semantic cache and the
model selection see before choosing a threshold.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from inferscale.embedding import EmbeddingUnavailable
from inferscale.embedding.package import read_model
from inferscale.embedding.sentence import load_sentence_encoder
from inferscale.embedding.store import build_table, load_static_encoder, table_dir, table_name


def cmd_build(args: argparse.Namespace) -> int:
    """Distil the table, with a progress line on stderr, and print where it was written."""
    if args.if_missing and not args.out:
        try:
            cached = table_dir() / table_name(read_model().digest)
        except EmbeddingUnavailable as err:
            print(f"inferscale embedding build: {err}", file=sys.stderr)
            return 1
        if cached.is_file():
            print(cached)
            return 0
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        if done == total or done % 4096 < 512:
            elapsed = time.monotonic() - started
            print(f"\r  {done:>6}/{total} tokens, {elapsed:5.0f} s", end="", file=sys.stderr)

    try:
        path = build_table(Path(args.out) if args.out else None, progress=progress)
    except EmbeddingUnavailable as err:
        print(f"\ninferscale embedding build: {err}", file=sys.stderr)
        return 1
    print(file=sys.stderr)
    print(path)
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    """Cosine similarity of two texts under the static and the full encoder."""
    try:
        static = load_static_encoder(build_if_missing=args.build)
        full = load_sentence_encoder()
    except EmbeddingUnavailable as err:
        print(f"inferscale embedding similarity: {err}", file=sys.stderr)
        return 1
    for name, encoder in (("static", static), ("full", full)):
        first, second = encoder.encode([args.text_a, args.text_b])
        print(f"{name:<7} {float(first @ second):.4f}  ({encoder.name})")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``inferscale embedding build`` and ``inferscale embedding similarity``."""
    parser = sub.add_parser("embedding", help="the sentence embeddings of the cache and selection")
    commands = parser.add_subparsers(dest="embedding_command", required=True)
    build = commands.add_parser(
        "build", help=f"distil the static table from the installed model (default: {table_dir()})"
    )
    build.add_argument("--out", help="write the table to this file instead of the cache")
    build.add_argument(
        "--if-missing", action="store_true", help="do nothing if the cache has the table already"
    )
    build.set_defaults(func=cmd_build)
    similarity = commands.add_parser("similarity", help="cosine similarity of two texts")
    similarity.add_argument("text_a")
    similarity.add_argument("text_b")
    similarity.add_argument(
        "--build", action="store_true", help="build the static table first if it is missing"
    )
    similarity.set_defaults(func=cmd_similarity)
