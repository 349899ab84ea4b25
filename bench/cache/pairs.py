"""Labelled pairs of texts and the precision and recall of cache hits over them (pure).

A pair is (text_a, text_b, same): ``same`` is whether the two mean the same thing. A cache
configured with a similarity threshold *hits* on a pair when the similarity of the two texts is
at least the threshold; a hit is right when the pair means the same. Precision is the share of
hits that are right, recall the share of same-meaning pairs that hit.

Readers:

- :func:`read_stsb`: the STS benchmark's headerless ``sentence1,sentence2,score`` CSV (score
  0-5); a score of at least :data:`STSB_SAME` is "the same meaning".
- :func:`read_pairs`: a user's file, JSON lines (``{"text_a", "text_b", "label"}``) or CSV
  (``text_a,text_b,label``, a header row allowed), label 1 for the same meaning and 0 for not.

Bad data is a :class:`PairsError` that names the line, never a traceback.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

STSB_SAME: Final = 4.0
"""STS-B score from which a pair counts as the same meaning (the usual cut)."""

TARGET_PRECISION: Final = 0.95
MIN_HITS: Final = 20
"""Fewest hits on the tuning pairs for a threshold's precision to count (a threshold with a
handful of hits can reach any precision by luck)."""


class PairsError(ValueError):
    """A pairs file that cannot be read, with the line at fault."""


@dataclass(frozen=True)
class Pair:
    text_a: str
    text_b: str
    same: bool


@dataclass(frozen=True)
class Score:
    """Precision and recall of hits at one threshold."""

    threshold: float
    hits: int
    right: int
    positives: int

    @property
    def precision(self) -> float:
        return self.right / self.hits if self.hits else 1.0

    @property
    def recall(self) -> float:
        return self.right / self.positives if self.positives else 0.0


def read_stsb(path: Path) -> list[Pair]:
    """The pairs of an STS-B CSV file."""
    pairs = []
    with path.open(newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), 1):
            if len(row) != 3:
                raise PairsError(f"{path}:{line}: expected 3 columns, got {len(row)}")
            try:
                score = float(row[2])
            except ValueError:
                raise PairsError(f"{path}:{line}: score {row[2]!r} is not a number") from None
            pairs.append(Pair(row[0], row[1], score >= STSB_SAME))
    return pairs


def _label(value: object, where: str) -> bool:
    if value in (1, "1", True, "true"):
        return True
    if value in (0, "0", False, "false"):
        return False
    raise PairsError(f"{where}: label {value!r} is not 1 (same meaning) or 0 (not)")


def _text(value: object, name: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PairsError(f"{where}: {name} must be a non-empty string")
    return value


def parse_pairs(text: str, name: str = "pairs") -> list[Pair]:
    """Pairs from JSON lines or CSV (decided by the first non-blank character)."""
    if text.lstrip().startswith("{"):
        return _parse_jsonl(text, name)
    return _parse_csv(text, name)


def _parse_jsonl(text: str, name: str) -> list[Pair]:
    pairs = []
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{name}:{line}"
        try:
            doc = json.loads(raw)
        except ValueError as error:
            raise PairsError(f"{where}: not JSON ({error})") from None
        if not isinstance(doc, dict):
            raise PairsError(f"{where}: expected an object with text_a, text_b and label")
        pairs.append(
            Pair(
                _text(doc.get("text_a"), "text_a", where),
                _text(doc.get("text_b"), "text_b", where),
                _label(doc.get("label"), where),
            )
        )
    return _nonempty(pairs, name)


def _parse_csv(text: str, name: str) -> list[Pair]:
    pairs = []
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise PairsError(f"{name}: not CSV ({error})") from None
    for line, row in enumerate(rows, 1):
        if not row or not any(cell.strip() for cell in row):
            continue
        where = f"{name}:{line}"
        if len(row) != 3:
            raise PairsError(f"{where}: expected text_a,text_b,label; got {len(row)} columns")
        if line == 1 and row[2].strip().lower() == "label":
            continue  # the header
        pairs.append(
            Pair(
                _text(row[0], "text_a", where),
                _text(row[1], "text_b", where),
                _label(row[2].strip(), where),
            )
        )
    return _nonempty(pairs, name)


def _nonempty(pairs: list[Pair], name: str) -> list[Pair]:
    if not pairs:
        raise PairsError(f"{name}: no pairs")
    return pairs


def read_pairs(path: Path) -> list[Pair]:
    """A user's pairs file (see :func:`parse_pairs`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PairsError(f"{path}: cannot read ({error})") from None
    return parse_pairs(text, str(path))


def score(similarities: Sequence[float], same: Sequence[bool], threshold: float) -> Score:
    """Hits at ``threshold``: how many, how many right, out of how many same-meaning pairs."""
    hits = right = 0
    for similarity, label in zip(similarities, same, strict=True):
        if similarity >= threshold:
            hits += 1
            right += label
    return Score(threshold, hits, right, sum(same))


def sweep(
    similarities: Sequence[float], same: Sequence[bool], thresholds: Iterable[float]
) -> list[Score]:
    return [score(similarities, same, t) for t in thresholds]


def choose(scores: Sequence[Score], target: float = TARGET_PRECISION) -> Score | None:
    """The lowest threshold whose precision, and that of every higher one, meets ``target``.

    Thresholds with fewer than :data:`MIN_HITS` hits do not count against it (their precision
    is noise), nor can they be chosen. ``None`` when no threshold qualifies.
    """
    ordered = sorted(scores, key=lambda s: s.threshold)
    chosen = None
    for s in reversed(ordered):
        if s.hits < MIN_HITS:
            continue
        if s.precision < target:
            break
        chosen = s
    return chosen
