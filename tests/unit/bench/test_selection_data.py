"""bench/selection's CSV reader: the shared format, and bad files refused with the reason."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "selection"


def load_data_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("selection_data", BENCH / "data.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("selection_data", module)
    spec.loader.exec_module(module)
    return module


data = load_data_module()


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_reads_the_shared_format_and_picks_the_weak_model(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", 'prompt,small,big\n"two\nlines",False,True\nb,True,True\n')
    labelled = data.read_labelled(path)
    assert labelled.prompts == ["two\nlines", "b"]
    assert (labelled.weak_name, labelled.strong_name) == ("small", "big")
    assert labelled.weak_ok.tolist() == [False, True]
    named = data.read_labelled(path, weak="big", strong="small")
    assert named.weak_ok.tolist() == [True, True]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("question,a,b\nx,True,True\n", "no `prompt` column"),
        ("prompt,a\nx,True\n", "at least two models"),
        ("prompt,a,b\n", "no rows"),
        ("prompt,a,b\nx,True,perhaps\n", ":2 b: expected True or False"),
        ("prompt,a,b\nx,True\n", ":2 b: expected True or False"),
        ("prompt,a,b\nx,True,False,extra\n", "wrong number of fields"),
        ("prompt,a,b,c\nx,True,False,True\n", "3 model columns"),
        (b"prompt,a,b\n\xff,True,False\n", "cannot read"),
    ],
)
def test_bad_files_are_refused_with_the_reason(tmp_path: Path, text, message) -> None:
    with pytest.raises(data.DataError, match=message):
        data.read_labelled(write(tmp_path, "bad.csv", text))


def test_unknown_model_column_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "prompt,a,b\nx,True,False\n")
    with pytest.raises(data.DataError, match="no column 'c'"):
        data.read_labelled(path, weak="c")
    with pytest.raises(data.DataError, match="cannot read"):
        data.read_labelled(tmp_path / "missing.csv")


def test_subjects_split_by_seed_and_contaminated_prompts_are_left_out(tmp_path: Path) -> None:
    for subject in ("algebra", "law", "art"):
        write(tmp_path, f"mmlu_{subject}.csv", f"prompt,w,s\n{subject} q,True,False\nleak,1,0\n")
    write(tmp_path, "contaminated_prompts.jsonl", '{"eval_prompt": "leak"}\n')
    labelled = data.read_mmlu(tmp_path, weak="w", strong="s")
    assert sorted(labelled.subjects) == ["algebra", "art", "law"]
    training, held_out = data.split_subjects(labelled.subjects, 1, seed=0)
    assert data.split_subjects(labelled.subjects, 1, seed=0) == (training, held_out)
    assert len(held_out) == 1 and training | held_out == {"algebra", "art", "law"}
    with pytest.raises(data.DataError, match="cannot hold out 3 of 3"):
        data.split_subjects(labelled.subjects, 3, seed=0)
    with pytest.raises(data.DataError, match="no mmlu_"):
        data.read_mmlu(tmp_path / "empty")


def test_subject_mean_gain_scores_each_prompt_by_its_subjects_mean() -> None:
    labelled = data.Labelled(
        prompts=["a", "b", "c", "d"],
        weak_ok=np.array([False, True, False, True]),
        strong_ok=np.array([True, True, False, False]),
        subjects=["x", "x", "y", "y"],
        weak_name="w",
        strong_name="s",
    )
    assert data.subject_mean_gain(labelled).tolist() == [0.5, 0.5, -0.5, -0.5]
