"""bench/selection's training (the length blend, the calibration) and run_bench's ``--data``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from inferscale.router.difficulty import model_from_document

BENCH = Path(__file__).resolve().parents[3] / "bench" / "selection"


def load(name: str) -> ModuleType:
    # The scripts import their sibling ``data`` module by putting their folder on sys.path.
    spec = importlib.util.spec_from_file_location(f"selection_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = load("train")
run_bench = load("run_bench")


def labelled(rows: int = 80) -> object:
    """Prompts whose length decides: long ones only the strong model answers."""
    prompts = [f"Question {i}: " + "why " * (i % 20) for i in range(rows)]
    long = np.array([i % 20 >= 10 for i in range(rows)])
    return train.Labelled(
        prompts=prompts,
        weak_ok=~long,
        strong_ok=np.ones(rows, dtype=np.bool_),
        subjects=["s"] * rows,
        weak_name="weak",
        strong_name="strong",
    )


def test_quantile_table_collapses_ties_into_strictly_increasing_points() -> None:
    points, shares = train.quantile_table(np.array([1.0] * 60 + [2.0] * 30 + [5.0] * 10))
    assert points.tolist() == [1.0, 2.0, 5.0]
    assert shares.tolist() == pytest.approx([0.6, 0.9, 1.0])  # the share at or below each


@pytest.mark.parametrize("length_weight", [0.0, 0.5])
def test_training_blends_length_and_calibrates_the_blended_scores(length_weight: float) -> None:
    data = labelled()
    model = train.train(data, 16, 1e-3, 200, length_weight, "a test")
    assert (model.blend is None) == (length_weight == 0.0)
    scores = np.array([model.score(text) for text in data.prompts])
    cuts = [model.threshold_for_share(share) for share, _ in model.calibration]
    assert cuts == sorted(cuts, reverse=True)
    assert not np.any(scores >= model.threshold_for_share(0.0))
    assert np.all(scores >= model.threshold_for_share(1.0))
    assert np.mean(scores >= model.threshold_for_share(0.5)) == pytest.approx(0.5, abs=0.1)
    # The long prompts (only the strong model right) score above the short ones.
    long = ~data.weak_ok
    assert scores[long].min() > scores[~long].max()
    again = model_from_document(json.loads(json.dumps(model.to_document())))
    assert again.score(data.prompts[-1]) == pytest.approx(model.score(data.prompts[-1]), abs=1e-5)


def test_run_bench_data_prints_the_apgr_last(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "traffic.csv"
    csv.write_text(
        'prompt,cheap,big\n"short?",True,True\n"' + "a long hard question " * 40 + '",False,True\n'
        '"medium question here",False,False\n'
    )
    assert run_bench.main(["--data", str(csv), "--weak", "cheap", "--strong", "big"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("artefact difficulty.json sha256 ")  # the shipped one, named
    last = out[-1]
    assert last.startswith("APGR ") and 0.0 <= float(last.split()[1]) <= 2.0


def test_run_bench_refuses_a_broken_artefact_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artefact = tmp_path / "difficulty.json"
    artefact.write_text('{"format": "inferscale.difficulty/v1", "buckets": 4}')
    csv = tmp_path / "traffic.csv"
    csv.write_text("prompt,cheap,big\nhi,True,False\n")
    assert run_bench.main(["--data", str(csv), "--model", str(artefact)]) == 2
    assert "error: malformed difficulty model" in capsys.readouterr().err


tune = load("tune")


def test_tune_folds_partition_the_subjects_whole() -> None:
    subjects = [name for name in "abcdefg" for _ in range(3)]
    masks = list(tune.subject_folds(subjects, 3, [1, 2]))
    assert len(masks) == 6
    for first in (0, 3):  # each shuffle covers every row exactly once
        assert np.sum(masks[first : first + 3], axis=0).tolist() == [1] * len(subjects)
    for mask in masks:  # a subject is never split across folds
        chosen = {subject for subject, kept in zip(subjects, mask, strict=True) if kept}
        assert all(mask[i] == (subject in chosen) for i, subject in enumerate(subjects))


def test_tune_never_reads_the_held_out_subjects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = {"weak": "mistralai/Mixtral-8x7B-Instruct-v0.1", "strong": "gpt-4-1106-preview"}
    for subject in "abcde":
        rows = "".join(
            f'"{subject} question {i}{" why" * (i % 7)}",{i % 7 < 4},True\n' for i in range(14)
        )
        (tmp_path / f"mmlu_{subject}.csv").write_text(
            f"prompt,{model['weak']},{model['strong']}\n{rows}"
        )
    seen: list[str] = []
    real_features = tune.feature_matrix

    def spy(prompts: list[str], buckets: int) -> np.ndarray:
        seen.extend(prompts)
        return real_features(prompts, buckets)

    monkeypatch.setattr(tune, "feature_matrix", spy)
    argv = ["--mmlu", str(tmp_path), "--held-out", "2", "--folds", "3", "--cv-seeds", "1"]
    argv += ["--l2s", "1e-2", "--length-weights", "0", "1", "--steps", "20", "--buckets", "16"]
    assert tune.main(argv) == 0
    _, held_out = train.split_subjects(list("abcde"), 2, 0)
    assert seen and not any(prompt.split()[0] in held_out for prompt in seen)
    out = capsys.readouterr().out
    assert "| 0.01 | 1 |" in out and out.strip().splitlines()[-1].startswith("pick ")
