"""The prompt-difficulty model: features, scoring, the shipped artefact and bad artefacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferscale.router.difficulty import (
    CHEAP_FEATURES,
    DifficultyModel,
    DifficultyModelUnavailable,
    LengthBlend,
    LinearHead,
    cheap_features,
    hashed_words,
    load_difficulty_model,
    model_from_document,
    prompt_features,
)

QUESTION = "What is 12 * 7?\nA. 84\nB. 74\nC. 82\nD. 94\nAnswer:"


def make_model(buckets: int = 8, **overrides: Any) -> DifficultyModel:
    width = len(CHEAP_FEATURES) + buckets
    strong = np.zeros(width)
    strong[0] = 1.0  # longer prompts: the strong model more likely right
    fields: dict[str, Any] = {
        "buckets": buckets,
        "mean": np.zeros(width),
        "scale": np.ones(width),
        "weak": LinearHead(np.zeros(width), 0.0),
        "strong": LinearHead(strong, -3.0),
        "calibration": ((0.0, 1.0), (0.5, 0.2), (1.0, -1.0)),
        "trained_on": "a test",
    }
    return DifficultyModel(**{**fields, **overrides})


def test_cheap_features_read_the_text() -> None:
    values = dict(zip(CHEAP_FEATURES, cheap_features(QUESTION), strict=True))
    assert values["questions"] == 1.0
    assert values["options_numeric"] == 1.0  # every option is a number: a calculation
    assert values["statements"] == 0.0 and values["code"] == 0.0
    assert values["digit_share"] > 0 and values["math_share"] > 0
    code = dict(zip(CHEAP_FEATURES, cheap_features("def f(x):\n    return x"), strict=True))
    assert code["code"] == 1.0 and code["options_numeric"] == 0.0


def test_empty_text_has_finite_features() -> None:
    row = prompt_features("", 16)
    assert row.shape == (len(CHEAP_FEATURES) + 16,) and np.all(np.isfinite(row))
    assert not hashed_words("", 16).any()


def test_hashed_words_are_stable_and_unit_length() -> None:
    first = hashed_words("The cat sat on the mat", 64)
    assert np.linalg.norm(first) == pytest.approx(1.0)
    # crc32, not Python's salted hash(): the same buckets in every process (pinned here).
    same = hashed_words("the CAT sat on the mat", 64)
    assert np.nonzero(first)[0].tolist() == np.nonzero(same)[0].tolist()
    assert hashed_words("cat", 64).argmax() == 2656977832 % 64  # zlib.crc32(b"cat")


def test_score_is_the_gain_of_the_strong_model() -> None:
    model = make_model()
    short, long = model.score("Hi?"), model.score("x " * 2000)
    assert -1.0 < short < long < 1.0
    assert model.threshold_for_share(0.25) == pytest.approx(0.6)
    assert model.threshold_for_share(0.0) == 1.0 and model.threshold_for_share(1.0) == -1.0
    with pytest.raises(ValueError, match="0..1"):
        model.threshold_for_share(1.5)


def blended(length_weight: float = 0.5) -> DifficultyModel:
    # Training prompts had gains 0.0..0.2 and log lengths 2..8, spread evenly.
    blend = LengthBlend(
        length_weight=length_weight,
        gain_points=np.array([0.0, 0.1, 0.2]),
        gain_shares=np.array([0.0, 0.5, 1.0]),
        length_points=np.array([2.0, 5.0, 8.0]),
        length_shares=np.array([0.0, 0.5, 1.0]),
    )
    return make_model(blend=blend)


def test_blend_ranks_gain_and_length_on_the_training_prompts() -> None:
    plain, model = make_model(), blended(0.25)
    text = "x" * 400  # log1p(400) = 5.99: a third of the way from the median to the longest
    gain_rank = float(np.interp(plain.gain(text), [0.0, 0.1, 0.2], [0.0, 0.5, 1.0]))
    length_rank = float(np.interp(np.log1p(400), [2.0, 5.0, 8.0], [0.0, 0.5, 1.0]))
    assert model.gain(text) == plain.gain(text) == plain.score(text)
    assert model.score(text) == pytest.approx(0.75 * gain_rank + 0.25 * length_rank)
    # Beyond the training range the ranks stop at 0 and 1: scores stay in 0..1.
    assert blended(1.0).score("") == 0.0 and blended(1.0).score("x" * 10**5) == 1.0
    assert blended(0.0).score(text) == pytest.approx(gain_rank)


def test_document_round_trips() -> None:
    model = make_model()
    again = model_from_document(json.loads(json.dumps(model.to_document())))
    assert again.score(QUESTION) == pytest.approx(model.score(QUESTION))
    assert again.calibration == model.calibration
    assert "lengthBlend" not in model.to_document() and again.blend is None
    model = blended()
    again = model_from_document(json.loads(json.dumps(model.to_document())))
    assert again.score(QUESTION) == pytest.approx(model.score(QUESTION))


def test_shipped_artefact_loads_small_and_scores() -> None:
    model = load_difficulty_model()
    assert model.trained_on.startswith("MMLU")
    assert Path("operator/inferscale/router/difficulty.json").stat().st_size < 100_000
    scores = [model.score(text) for text in (QUESTION, "hello", "x" * 10_000)]
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert model.blend is not None and 0.0 < model.blend.length_weight < 1.0
    cuts = [model.threshold_for_share(share / 10) for share in range(11)]
    assert cuts == sorted(cuts, reverse=True)
    # The calibration holds: no score reaches share 0's cut, every score reaches share 1's.
    assert max(scores) < model.threshold_for_share(0.0)
    assert min(scores) >= model.threshold_for_share(1.0)


def corrupt(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(document))
    *parents, last = path.split(".")
    target = copy
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return copy


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("format", "other/v9", "not a inferscale.difficulty/v1"),
        ("buckets", "many", "malformed"),
        ("cheapFeatures", ["log_chars"], "features differ"),
        ("mean", [0.0], "`mean` must be"),
        ("scale", KeyError, "malformed"),
        ("weak.weights", [float("nan")] * 20, "`weights` must be"),
        ("strong", [1, 2], "`strong` must be an object"),
        ("calibration", [[0.5, 0.0]], "2\\+ points"),
        ("calibration", [[1.0, 0.0], [0.0, 1.0]], "ascending"),
        ("lengthBlend", [0.5], "`lengthBlend` must be an object"),
        ("lengthBlend.lengthWeight", 1.5, "in 0..1"),
        ("lengthBlend.lengthWeight", KeyError, "malformed"),
        ("lengthBlend.gain", [[0.0, 0.0], [0.0, 1.0]], "increasing values"),
        ("lengthBlend.length", [[1.0, 2.0], [0.0, 2.0]], "shares in 0..1"),
        ("lengthBlend.length", [[1.0, float("nan")], [0.0, 1.0]], "increasing values"),
        ("lengthBlend.gain", [[1.0, 2.0]], "malformed"),
        ("lengthBlend.gain", 7, "malformed"),
    ],
)
def test_malformed_artefacts_are_refused_with_the_reason(path, value, message) -> None:
    document = blended().to_document()
    with pytest.raises(DifficultyModelUnavailable, match=message):
        model_from_document(corrupt(document, path, value))


@pytest.mark.parametrize("content", [b"", b"{not json", b"\xff\xfe", b"[]"])
def test_unreadable_artefact_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "difficulty.json"
    path.write_bytes(content)
    with pytest.raises(DifficultyModelUnavailable):
        load_difficulty_model(path)
    with pytest.raises(DifficultyModelUnavailable, match="cannot read"):
        load_difficulty_model(tmp_path / "missing.json")
