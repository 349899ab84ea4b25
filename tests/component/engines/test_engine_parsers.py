"""Every generated vLLM and SGLang command line, parsed by the pinned engine's own parser.

Needs the engines' venvs that `make engine-check` installs (about 10 GB each, outside the
repository); skipped, saying so, where they are absent, as in CI. Each engine is started once for
all its lines, with two misspelt lines among them that it must refuse.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inferscale.cli.engine_check import Line, all_lines, parse_with_engine
from inferscale.reconcile.engines import SGLANG_VERSION, VLLM_VERSION

REPO = Path(__file__).resolve().parents[3]
CACHE = Path(
    os.environ.get("INFERSCALE_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inferscale"
)


def engine_python(engine: str, version: str) -> Path:
    venv = CACHE / "engines" / f"{engine}-{version}"
    if not (venv / ".installed").exists():
        pytest.skip(f"{engine} {version} is not installed in {venv} (make engine-check does it)")
    return venv / "bin" / "python"


@pytest.mark.timeout(1200)
@pytest.mark.parametrize(
    ("engine", "version", "flag", "misspelt"),
    [
        ("vllm", VLLM_VERSION, "--max-model-len", "--max-model-length"),
        ("sglang", SGLANG_VERSION, "--context-length", "--context-lenght"),
    ],
)
def test_every_line_parses_and_a_misspelt_flag_does_not(engine, version, flag, misspelt):
    python = engine_python(engine, version)
    lines = [line for line in all_lines(REPO) if line.engine == engine]
    assert len(lines) > 20
    with_flag = next(line for line in lines if flag in line.args)
    bad = [
        Line("misspelt", engine, tuple(misspelt if a == flag else a for a in with_flag.args)),
        Line("unknown", engine, (*lines[0].args, "--tensor-paralel-size", "2")),
    ]
    answer = parse_with_engine(str(python), engine, [*lines, *bad])
    assert answer["version"] == version
    sent = [*lines, *bad]
    refused = {sent[r["id"]].source: r["error"] for r in answer["results"] if not r["ok"]}
    assert set(refused) == {"misspelt", "unknown"}, refused
    assert "--tensor-paralel-size" in refused["unknown"]
    assert misspelt in refused["misspelt"]
