"""inferscale engine-check: the lines it covers, the matrix it writes, how it reads answers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import yaml

from inferscale.api.v1alpha1.inference_model import Optimization
from inferscale.cli import engine_parse
from inferscale.cli.engine_check import (
    MATRIX_MARKERS,
    Line,
    _field_values,
    all_lines,
    cmd_engine_check,
    engine_version,
    field_cases,
    golden_lines,
    parse_with_engine,
    render_matrix,
    render_run,
    replace_between,
)
from inferscale.reconcile.engines import ENGINES, SGLANG_VERSION, VLLM_VERSION

REPO = Path(__file__).resolve().parents[3]


def test_every_optimization_field_has_cases():
    labels = [c.label for c in field_cases()]
    for name in Optimization.model_fields:
        wire = "".join(p.capitalize() if i else p for i, p in enumerate(name.split("_")))
        assert any(label.startswith(f"optimization.{wire}=") for label in labels), wire
    assert "optimization.speculativeDecoding" in " ".join(labels)
    assert {"model=s3://bucket/model", "model=pvc://weights/model"} <= set(labels)


def test_a_field_with_no_sample_values_is_an_error():
    with pytest.raises(ValueError, match=r"optimization.new_knob: add some to SAMPLES"):
        _field_values("new_knob", int | None)


def test_every_example_and_golden_deployment_is_covered():
    lines = all_lines(REPO)
    examples = {line.source.split(" ")[0] for line in lines if line.kind == "example"}
    assert "examples/vllm-llama-3.1-8b.yaml" in examples
    goldens = sorted(p for p in (REPO / "tests" / "golden").glob("*.yaml"))
    deployments = [
        d for p in goldens for d in yaml.safe_load_all(p.read_text()) if d["kind"] == "Deployment"
    ]
    assert len(golden_lines(REPO)) == len(deployments) > 0


def test_the_versions_come_from_the_default_images():
    assert engine_version("vllm") == VLLM_VERSION
    assert engine_version("sglang") == SGLANG_VERSION
    assert ENGINES["vllm"].default_image == f"vllm/vllm-openai:v{VLLM_VERSION}"


def test_docs_engines_md_holds_the_current_matrix():
    docs = (REPO / "docs" / "engines.md").read_text()
    assert replace_between(docs, MATRIX_MARKERS, render_matrix()) == docs, (
        "docs/engines.md is stale: run `.venv/bin/inferscale engine-check --docs docs/engines.md`"
    )


def test_replace_between_needs_both_markers():
    with pytest.raises(ValueError, match="markers"):
        replace_between("no markers here", MATRIX_MARKERS, "x")


def test_the_run_record_names_versions_counts_and_each_refusal():
    lines = {"vllm": [Line("a", "vllm", ("m",)), Line("g.yaml", "vllm", ("m",), "golden")]}
    answer = {
        "engine": "vllm",
        "version": "0.11.0",
        "results": [{"id": 0, "ok": True, "error": None}, {"id": 1, "ok": False, "error": "bad"}],
    }
    text = render_run([answer], lines, "2026-12-05")
    assert "vllm 0.11.0 (PyPI): 2 command lines (1 field, 0 example, 1 golden), 1 refused:" in text
    assert "  - `g.yaml`: bad" in text


# --- engine_parse.check_lines with a stand-in for an engine's parser ------------------------


def stand_in_check(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="engine")
    parser.add_argument("model")
    parser.add_argument("--tensor-parallel-size", type=int)
    parser.add_argument("--kv-cache-dtype", choices=["auto", "fp8"])
    parsed = parser.parse_args(args)
    if parsed.tensor_parallel_size == 3:
        raise ValueError("tensor parallel size 3 does not divide the heads")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["m", "--tensor-parallel-size", "2"], None),
        (["m", "--tensor-paralel-size", "2"], "unrecognized arguments: --tensor-paralel-size 2"),
        (["m", "--kv-cache-dtype", "fp9"], "invalid choice: 'fp9'"),
        (["m", "--tensor-parallel-size", "two"], "invalid int value: 'two'"),
        (["m", "--tensor-parallel-size", "3"], "ValueError: tensor parallel size 3"),
    ],
)
def test_check_lines_reports_the_parsers_own_message(args, error):
    (result,) = engine_parse.check_lines(stand_in_check, [{"id": 7, "args": args}])
    assert result["id"] == 7
    if error is None:
        assert result == {"id": 7, "ok": True, "error": None}
    else:
        assert not result["ok"] and error in result["error"]


def test_a_python_that_cannot_run_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="cannot run"):
        parse_with_engine(str(tmp_path / "no-python"), "vllm", [Line("x", "vllm", ("m",))])
    # A Python without the engine: the script's own import error, with its exit status.
    with pytest.raises(RuntimeError, match=r"(?s)failed \(exit 1\).*No module named 'vllm'"):
        parse_with_engine(sys.executable, "vllm", [Line("x", "vllm", ("m",))])


def test_an_engine_python_argument_without_a_path_is_refused(capsys):
    args = argparse.Namespace(repo=str(REPO), engine_python=["vllm"], docs=None)
    assert cmd_engine_check(args) == 2
    assert "want ENGINE=PYTHON" in capsys.readouterr().err
