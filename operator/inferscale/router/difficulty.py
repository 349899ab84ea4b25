"""Prompt difficulty: how much a prompt needs the strong model, from its text alone.

Owns the features (cheap text statistics plus hashed words), the scoring of a trained linear
model over them and its blend with the prompt's length; ``bench/selection/train.py`` fits the
weights offline and writes the artefact this module reads. Pure: numpy and the standard
library, no clock, no network; the only I/O is reading the artefact file it is handed. A bad
artefact raises ``DifficultyModelUnavailable`` with the reason, so the router can fall back,
never crash.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inferscale.errors import InferscaleError

FloatVector = npt.NDArray[np.float64]

ARTEFACT_FORMAT = "inferscale.difficulty/v1"
WORD = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")
OPTION_LINE = re.compile(r"^[A-D]\. ?(.*)$", re.MULTILINE)
DIGIT = re.compile(r"\d")
UPPER = re.compile(r"[A-Z]")
MATH = re.compile(r"[=+\-*/^<>%()\[\]{}|√∑∫πθ]")
CODE_MARKERS = ("def ", "return", "{", "};", "print(", "==", "int ", "for (", "while")
CHEAP_FEATURES = (
    "log_chars",
    "log_words",
    "digit_share",
    "math_share",
    "upper_share",
    "questions",
    "lines",
    "code",
    "statements",
    "options_numeric",
    "log_option_chars",
    "log_longest_word",
)


class DifficultyModelUnavailable(InferscaleError):
    """The difficulty model's artefact is missing, unreadable or malformed."""


def cheap_features(text: str) -> list[float]:
    """The text statistics, in ``CHEAP_FEATURES`` order, each roughly in 0..10."""
    chars = max(len(text), 1)
    words = text.split()
    options = OPTION_LINE.findall(text)
    numeric = sum(1 for option in options if DIGIT.search(option))
    # Regex counts run in C: a Python loop per character would cost milliseconds per prompt.
    return [
        math.log1p(len(text)),
        math.log1p(len(words)),
        10.0 * len(DIGIT.findall(text)) / chars,
        10.0 * len(MATH.findall(text)) / chars,
        10.0 * len(UPPER.findall(text)) / chars,
        float(min(text.count("?"), 5)),
        math.log1p(text.count("\n")),
        float(any(marker in text for marker in CODE_MARKERS)),
        float("Statement 1" in text),
        numeric / len(options) if options else 0.0,
        math.log1p(sum(len(option) for option in options) / len(options)) if options else 0.0,
        math.log1p(max(map(len, words), default=0)),
    ]


def hashed_words(text: str, buckets: int) -> FloatVector:
    """Words and word pairs hashed into ``buckets`` (crc32: the same in every process), L2-unit."""
    tokens = WORD.findall(text.lower())
    pairs = [f"{first} {second}" for first, second in zip(tokens, tokens[1:], strict=False)]
    indices = [zlib.crc32(token.encode()) % buckets for token in (*tokens, *pairs)]
    vector = np.log1p(np.bincount(indices, minlength=buckets).astype(np.float64))
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


def prompt_features(text: str, buckets: int) -> FloatVector:
    """The full feature row of one prompt: cheap statistics, then hashed words."""
    return np.concatenate((np.array(cheap_features(text)), hashed_words(text, buckets)))


def feature_matrix(texts: Sequence[str], buckets: int) -> npt.NDArray[np.float64]:
    """One feature row per text."""
    return np.stack([prompt_features(text, buckets) for text in texts])


@dataclass(frozen=True)
class LinearHead:
    """A logistic regression over the standardised features: P(model answers correctly)."""

    weights: FloatVector
    bias: float

    def probability(self, row: FloatVector) -> float:
        """The predicted probability for one standardised feature row."""
        logit = float(row @ self.weights) + self.bias
        return 1.0 / (1.0 + math.exp(-max(min(logit, 60.0), -60.0)))


def _share_at_or_below(value: float, points: FloatVector, shares: FloatVector) -> float:
    """The share of the training prompts at or below ``value`` (an empirical CDF, interpolated)."""
    return float(np.interp(value, points, shares))


@dataclass(frozen=True)
class LengthBlend:
    """The classifier's gain blended with the prompt's length, as ranks on the training prompts.

    Why: on subjects it never saw, the classifier and the longest-prompt router err on
    different prompts, and their average ranks better than either (bench/selection). Both
    parts are turned into the share of training prompts they score at or above (so the blend
    cannot be swamped by one part's scale), then ``length_weight`` of the length's share is
    added to the rest of the gain's. Each quantile table holds (value, share) points with
    strictly increasing values.
    """

    length_weight: float
    gain_points: FloatVector
    gain_shares: FloatVector
    length_points: FloatVector
    length_shares: FloatVector

    def combine(self, gain: float, text: str) -> float:
        """The blended score of a prompt, in 0..1."""
        gain_rank = _share_at_or_below(gain, self.gain_points, self.gain_shares)
        length_rank = _share_at_or_below(
            prompt_length(text), self.length_points, self.length_shares
        )
        return (1.0 - self.length_weight) * gain_rank + self.length_weight * length_rank


def prompt_length(text: str) -> float:
    """The length the blend ranks: log characters, what the longest-prompt router sorts by."""
    return math.log1p(len(text))


@dataclass(frozen=True)
class DifficultyModel:
    """Two logistic heads (weak model right, strong model right) and their calibration.

    ``gain(text)`` is P(strong right) - P(weak right): the expected gain of calling the
    strong model, so prompts both models fail (or both pass) score low, as they should: a
    strong call there buys nothing. ``score(text)`` is that gain, or its blend with the
    prompt's length when the artefact has one (``blend``). ``calibration`` maps a share of
    strong calls to the score threshold that sent that share of the training prompts to the
    strong model.
    """

    buckets: int
    mean: FloatVector
    scale: FloatVector
    weak: LinearHead
    strong: LinearHead
    calibration: tuple[tuple[float, float], ...]
    trained_on: str
    blend: LengthBlend | None = None

    def features(self, text: str) -> FloatVector:
        """The standardised feature row of ``text``."""
        return (prompt_features(text, self.buckets) - self.mean) / self.scale

    def gain(self, text: str) -> float:
        """Expected gain of the strong model over the weak one on ``text``, in -1..1."""
        row = self.features(text)
        return self.strong.probability(row) - self.weak.probability(row)

    def score(self, text: str) -> float:
        """How much ``text`` needs the strong model: higher goes strong first; in -1..1."""
        gain = self.gain(text)
        return gain if self.blend is None else self.blend.combine(gain, text)

    def threshold_for_share(self, share: float) -> float:
        """The score above which a prompt goes to the strong model, for ``share`` (0..1)."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share of strong calls must be in 0..1, got {share}")
        shares = [point[0] for point in self.calibration]
        thresholds = [point[1] for point in self.calibration]
        return float(np.interp(share, shares, thresholds))

    def to_document(self) -> dict[str, Any]:
        """The artefact as JSON-ready data (7 significant digits: small and reproducible)."""

        def rounded(values: FloatVector) -> list[float]:
            return [float(f"{value:.7g}") for value in values]

        document: dict[str, Any] = {
            "format": ARTEFACT_FORMAT,
            "trainedOn": self.trained_on,
            "buckets": self.buckets,
            "cheapFeatures": list(CHEAP_FEATURES),
            "mean": rounded(self.mean),
            "scale": rounded(self.scale),
            "weak": {"weights": rounded(self.weak.weights), "bias": float(f"{self.weak.bias:.7g}")},
            "strong": {
                "weights": rounded(self.strong.weights),
                "bias": float(f"{self.strong.bias:.7g}"),
            },
            "calibration": [[share, float(f"{cut:.7g}")] for share, cut in self.calibration],
        }
        if self.blend is not None:
            document["lengthBlend"] = {
                "lengthWeight": self.blend.length_weight,
                "gain": [rounded(self.blend.gain_points), rounded(self.blend.gain_shares)],
                "length": [rounded(self.blend.length_points), rounded(self.blend.length_shares)],
            }
        return document


def _vector(document: dict[str, Any], key: str, length: int) -> FloatVector:
    values = np.asarray(document[key], dtype=np.float64)
    if values.shape != (length,) or not np.all(np.isfinite(values)):
        raise DifficultyModelUnavailable(f"`{key}` must be {length} finite numbers")
    return values


def _head(document: dict[str, Any], key: str, length: int) -> LinearHead:
    head = document[key]
    if not isinstance(head, dict):
        raise DifficultyModelUnavailable(f"`{key}` must be an object with weights and bias")
    return LinearHead(weights=_vector(head, "weights", length), bias=float(head["bias"]))


def _quantile_table(blend: dict[str, Any], key: str) -> tuple[FloatVector, FloatVector]:
    points, shares = (np.asarray(part, dtype=np.float64) for part in blend[key])
    if (
        points.ndim != 1
        or points.shape != shares.shape
        or points.size < 2
        or not np.all(np.isfinite(points))
        or not np.all(np.diff(points) > 0)
        or not np.all((shares >= 0) & (shares <= 1))
        or not np.all(np.diff(shares) >= 0)
    ):
        raise DifficultyModelUnavailable(
            f"`lengthBlend.{key}` must be 2+ increasing values and their shares in 0..1"
        )
    return points, shares


def _blend(document: dict[str, Any]) -> LengthBlend | None:
    blend = document.get("lengthBlend")
    if blend is None:
        return None  # a plain classifier: scores are its gains
    if not isinstance(blend, dict):
        raise DifficultyModelUnavailable("`lengthBlend` must be an object")
    weight = float(blend["lengthWeight"])
    if not 0.0 <= weight <= 1.0:
        raise DifficultyModelUnavailable("`lengthBlend.lengthWeight` must be in 0..1")
    gain_points, gain_shares = _quantile_table(blend, "gain")
    length_points, length_shares = _quantile_table(blend, "length")
    return LengthBlend(weight, gain_points, gain_shares, length_points, length_shares)


def model_from_document(document: Any) -> DifficultyModel:
    """A model from the artefact's JSON data; ``DifficultyModelUnavailable`` if malformed."""
    if not isinstance(document, dict) or document.get("format") != ARTEFACT_FORMAT:
        raise DifficultyModelUnavailable(f"not a {ARTEFACT_FORMAT} document")
    try:
        buckets = int(document["buckets"])
        if document["cheapFeatures"] != list(CHEAP_FEATURES) or buckets <= 0:
            raise DifficultyModelUnavailable("features differ from this version's")
        length = len(CHEAP_FEATURES) + buckets
        scale = _vector(document, "scale", length)
        if np.any(scale <= 0):
            raise DifficultyModelUnavailable("`scale` must be positive")
        calibration = tuple((float(s), float(t)) for s, t in document["calibration"])
        if len(calibration) < 2 or [s for s, _ in calibration] != sorted(s for s, _ in calibration):
            raise DifficultyModelUnavailable("`calibration` needs 2+ points, shares ascending")
        return DifficultyModel(
            buckets=buckets,
            mean=_vector(document, "mean", length),
            scale=scale,
            weak=_head(document, "weak", length),
            strong=_head(document, "strong", length),
            calibration=calibration,
            trained_on=str(document.get("trainedOn", "")),
            blend=_blend(document),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise DifficultyModelUnavailable(f"malformed difficulty model: {error!r}") from error


DEFAULT_ARTEFACT = Path(__file__).with_name("difficulty.json")


def load_difficulty_model(path: Path = DEFAULT_ARTEFACT) -> DifficultyModel:
    """The model in ``path`` (the shipped one by default); raises ``DifficultyModelUnavailable``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DifficultyModelUnavailable(f"cannot read {path.name}: {error}") from error
    return model_from_document(document)
