"""Labelled prompts for model selection: the shared MMLU files and users' CSVs of the same shape.

A file has a ``prompt`` column and one ``True``/``False`` column per model (the model answered
that prompt correctly), as RouteLLM's ``routellm/evals/mmlu/responses/*.csv``. Bad files are
refused with a ``DataError`` that names the file, row and column, never a traceback.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

BOOLEANS = {"true": True, "false": False, "1": True, "0": False}

# Read in place, never copied into the repository (../shared/data/README.md).
DEFAULT_MMLU = Path(__file__).resolve().parents[3] / "shared" / "data" / "routing-quality" / "mmlu"
WEAK_MMLU = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_MMLU = "gpt-4-1106-preview"


class DataError(ValueError):
    """A labelled file that cannot be used, with the reason."""


@dataclass(frozen=True)
class Labelled:
    """Prompts with whether the weak and the strong model answered each correctly."""

    prompts: list[str]
    weak_ok: npt.NDArray[np.bool_]
    strong_ok: npt.NDArray[np.bool_]
    subjects: list[str]
    weak_name: str
    strong_name: str

    def subset(self, keep: npt.NDArray[np.bool_]) -> Labelled:
        """The rows where ``keep`` is true."""
        index = np.nonzero(keep)[0]
        return Labelled(
            prompts=[self.prompts[i] for i in index],
            weak_ok=self.weak_ok[index],
            strong_ok=self.strong_ok[index],
            subjects=[self.subjects[i] for i in index],
            weak_name=self.weak_name,
            strong_name=self.strong_name,
        )


def _parse_bool(value: str | None, where: str) -> bool:
    parsed = BOOLEANS.get((value or "").strip().lower())
    if parsed is None:
        raise DataError(f"{where}: expected True or False, got {value!r}")
    return parsed


def read_rows(path: Path) -> tuple[list[str], dict[str, list[bool]]]:
    """The prompts of one CSV and, per model column, whether each answer was correct."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            if "prompt" not in columns:
                raise DataError(f"{path}: no `prompt` column (columns: {columns})")
            models = [name for name in columns if name != "prompt"]
            if len(models) < 2:
                raise DataError(f"{path}: needs a True/False column for at least two models")
            prompts: list[str] = []
            labels: dict[str, list[bool]] = {name: [] for name in models}
            for line, row in enumerate(reader, start=2):
                if row.get("prompt") is None or None in row:
                    raise DataError(f"{path}:{line}: wrong number of fields")
                prompts.append(row["prompt"])
                for name in models:
                    labels[name].append(_parse_bool(row.get(name), f"{path}:{line} {name}"))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: cannot read: {error}") from error
    if not prompts:
        raise DataError(f"{path}: no rows")
    return prompts, labels


def read_labelled(path: Path, weak: str | None = None, strong: str | None = None) -> Labelled:
    """One CSV as weak/strong labels; without names, the less accurate model is the weak one."""
    prompts, labels = read_rows(path)
    for name in (weak, strong):
        if name is not None and name not in labels:
            raise DataError(f"{path}: no column {name!r} (models: {sorted(labels)})")
    if weak is None or strong is None:
        if len(labels) > 2 and (weak is None and strong is None):
            raise DataError(f"{path}: {len(labels)} model columns: name --weak and --strong")
        by_accuracy = sorted(labels, key=lambda name: sum(labels[name]))
        weak = weak or next(name for name in by_accuracy if name != strong)
        strong = strong or next(name for name in reversed(by_accuracy) if name != weak)
    return Labelled(
        prompts=prompts,
        weak_ok=np.array(labels[weak], dtype=np.bool_),
        strong_ok=np.array(labels[strong], dtype=np.bool_),
        subjects=[path.stem] * len(prompts),
        weak_name=weak,
        strong_name=strong,
    )


def contaminated_prompts(folder: Path) -> set[str]:
    """Prompts RouteLLM's own training data overlaps; kept out of every evaluation."""
    path = folder / "contaminated_prompts.jsonl"
    if not path.exists():
        return set()
    with path.open(encoding="utf-8") as handle:
        return {json.loads(line)["eval_prompt"] for line in handle if line.strip()}


def read_mmlu(
    folder: Path = DEFAULT_MMLU, weak: str = WEAK_MMLU, strong: str = STRONG_MMLU
) -> Labelled:
    """All ``mmlu_<subject>.csv`` of ``folder``, contaminated prompts left out."""
    files = sorted(folder.glob("mmlu_*.csv"))
    if not files:
        raise DataError(f"{folder}: no mmlu_*.csv files (see ../shared/data/README.md)")
    skip = contaminated_prompts(folder)
    parts = [read_labelled(path, weak=weak, strong=strong) for path in files]
    rows = [
        (prompt, weak, strong, path.stem.removeprefix("mmlu_"))
        for path, part in zip(files, parts, strict=True)
        for prompt, weak, strong in zip(part.prompts, part.weak_ok, part.strong_ok, strict=True)
        if prompt not in skip
    ]
    return Labelled(
        prompts=[row[0] for row in rows],
        weak_ok=np.array([row[1] for row in rows], dtype=np.bool_),
        strong_ok=np.array([row[2] for row in rows], dtype=np.bool_),
        subjects=[row[3] for row in rows],
        weak_name=weak,
        strong_name=strong,
    )


def split_subjects(subjects: list[str], held_out: int, seed: int) -> tuple[set[str], set[str]]:
    """(training subjects, held-out subjects): ``held_out`` subjects drawn with ``seed``."""
    names = sorted(set(subjects))
    if not 0 < held_out < len(names):
        raise DataError(f"cannot hold out {held_out} of {len(names)} subjects")
    chosen = set(random.Random(seed).sample(names, held_out))
    return set(names) - chosen, chosen


def subject_mean_gain(data: Labelled) -> npt.NDArray[np.float64]:
    """Each prompt's score: its own subject's mean gain (an oracle: it uses the labels).

    Not a router: what knowing each prompt's subject (hidden by a held-out split) would buy.
    """
    gain = data.strong_ok.astype(np.float64) - data.weak_ok
    subjects = np.array(data.subjects)
    means = {name: gain[subjects == name].mean() for name in set(data.subjects)}
    return np.array([means[name] for name in data.subjects])
