"""``inferscale engine-check``: every engine command line the operator builds, parsed by the engine.

The lines: one per value of every field of ``spec.optimization``, per model source scheme
and per adapter case (built with :func:`~inferscale.reconcile.engines.engine_command` on a
minimal spec), one per InferenceModel under ``examples/``, and the engine container of every
golden Deployment under ``tests/golden/``. Each engine that has a Python venv
(``--engine-python vllm=PATH``) parses its lines with its own parser
(:mod:`inferscale.cli.engine_parse`, run by that Python); a line it
refuses fails the check with the engine's message.

The same table gives ``docs/engines.md`` its support matrix (engine x version x field: the flags
each value becomes, or that the engine refuses it), and the record of the last check run.
``make engine-check`` installs the pinned engines outside the repository and runs this.
"""

from __future__ import annotations

import argparse
import difflib
import json
import subprocess
import sys
import tempfile
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic.alias_generators import to_camel

from inferscale.api.v1alpha1.inference_model import (
    InferenceModelSpec,
    Optimization,
    SpeculativeDecoding,
)
from inferscale.reconcile.deployment import served_name
from inferscale.reconcile.engines import ENGINES, EngineCommand, UnsupportedSpec, engine_command

BASE_SPEC: Final[dict[str, Any]] = {"model": "hf://org/model", "engine": "vllm"}
"""The minimal spec every field case changes one thing of (wire names)."""

SAMPLES: Final[dict[str, list[Any]]] = {
    "tensor_parallel_size": [2],
    "max_model_len": [32768],
    "gpu_memory_utilization": [0.85],
    "kv_cache_offload": [{"hostMemoryGib": 64, "kvBytesPerToken": 131072}],
}
"""Values for optimisation fields that are neither a Literal nor a bool."""

DRAFT_MODEL: Final = "hf://org/draft"
PARSE_SCRIPT: Final = Path(__file__).with_name("engine_parse.py")
MATRIX_MARKERS: Final = ("<!-- engine-check:matrix -->", "<!-- /engine-check:matrix -->")
RUN_MARKERS: Final = ("<!-- engine-check:last-run -->", "<!-- /engine-check:last-run -->")


@dataclass(frozen=True)
class Case:
    """One thing a user can ask for, as spec overrides (wire names) on :data:`BASE_SPEC`."""

    label: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Line:
    """One command line to parse: where it comes from, the engine, its args."""

    source: str
    engine: str
    args: tuple[str, ...]
    kind: str = "field"
    """``field`` (a field case), ``example`` or ``golden``."""


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        both_dicts = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both_dicts else value
    return out


def _field_values(name: str, annotation: Any) -> list[Any]:
    """The sample values of one optimisation field; a field without any is an error to fix."""
    if name in SAMPLES:
        return SAMPLES[name]
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    values: list[Any] = []
    for option in options:
        if typing.get_origin(option) is typing.Literal:
            values += list(typing.get_args(option))
        elif option is bool:
            values += [True, False]
        elif option is SpeculativeDecoding:
            values += _speculative_values()
    if not values:
        raise ValueError(f"no sample values for optimization.{name}: add some to SAMPLES")
    return values


def _speculative_values() -> list[dict[str, Any]]:
    """speculativeDecoding: every method, with a draft model where the method takes one."""
    method = SpeculativeDecoding.model_fields["method"].annotation
    return [
        {"method": m, "numSpeculativeTokens": 4}
        | ({} if m == "ngram" else {"draftModel": DRAFT_MODEL})
        for m in typing.get_args(method)
    ]


def field_cases() -> list[Case]:
    """One case per value of every ``spec.optimization`` field, per model source, per layout."""
    cases = [Case("model=hf://org/model", {})]
    cases += [
        Case(f"model={m}", {"model": m}) for m in ("s3://bucket/model", "pvc://weights/model")
    ]
    for name, info in Optimization.model_fields.items():
        wire = to_camel(name)
        for value in _field_values(name, info.annotation):
            shown = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            overrides: dict[str, Any] = {"optimization": {wire: value}}
            if name == "tensor_parallel_size":
                overrides["resources"] = {"gpus": value}
            cases.append(Case(f"optimization.{wire}={shown}", overrides))
    cases.append(
        Case(
            "optimization.tensorParallelSize=2, resources.gpus=4",
            {"resources": {"gpus": 4}, "optimization": {"tensorParallelSize": 2}},
        )
    )
    return cases + adapter_cases()


def adapter_cases() -> list[Case]:
    """LoRA adapters: the default rank and slots, and a rank that rounds up, with more slots."""
    unranked = [{"name": "a", "source": "hf://org/a-lora"}]
    ranked = [
        {"name": "a", "source": "hf://org/a-lora", "rank": 8},
        {"name": "b", "source": "pvc://loras/b", "rank": 100},
    ]
    return [
        Case("adapters=[1, no rank]", {"adapters": unranked}),
        Case(
            "adapters=[2, rank 8 and 100], adapterSlots=8", {"adapters": ranked, "adapterSlots": 8}
        ),
    ]


def build(engine: str, case: Case) -> EngineCommand | UnsupportedSpec:
    """The command ``engine`` gets for ``case``, or why it refuses it."""
    spec = InferenceModelSpec.model_validate(_merge(BASE_SPEC | {"engine": engine}, case.overrides))
    try:
        return engine_command(spec, "served")
    except UnsupportedSpec as refused:
        return refused


def field_lines(engines: Iterable[str]) -> list[Line]:
    """The command line of every field case that each engine accepts."""
    lines = []
    for engine in engines:
        for case in field_cases():
            built = build(engine, case)
            if isinstance(built, EngineCommand):
                lines.append(Line(case.label, engine, built.args))
    return lines


def example_lines(repo: Path) -> list[Line]:
    """The command line of every InferenceModel in ``examples/``."""
    lines = []
    for path in sorted((repo / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "InferenceModel":
                continue
            spec = InferenceModelSpec.model_validate(doc["spec"])
            name = doc["metadata"]["name"]
            built = engine_command(spec, served_name(name, spec))
            source = f"{path.relative_to(repo)} ({name})"
            lines.append(Line(source, spec.engine, built.args, "example"))
    return lines


def golden_lines(repo: Path) -> list[Line]:
    """The engine container's args of every golden Deployment in ``tests/golden/``."""
    lines = []
    for path in sorted((repo / "tests" / "golden").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "Deployment":
                continue
            engine = doc["metadata"]["labels"]["inferscale.io/engine"]
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if container["name"] == "engine":
                    args = tuple(str(a) for a in container.get("args") or ())
                    lines.append(Line(str(path.relative_to(repo)), engine, args, "golden"))
    return lines


def all_lines(repo: Path) -> list[Line]:
    """Every command line the check covers, for every engine."""
    return field_lines(ENGINES) + example_lines(repo) + golden_lines(repo)


def parse_with_engine(python: str, engine: str, lines: Sequence[Line]) -> dict[str, Any]:
    """Run :data:`PARSE_SCRIPT` with the engine's Python on ``lines``; its answer.

    Raises:
        RuntimeError: the script could not run (no such Python, the engine does not import).
    """
    request = {
        "engine": engine,
        "lines": [{"id": i, "args": line.args} for i, line in enumerate(lines)],
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "answer.json"
        try:
            # -P: the script's folder (inferscale/cli, with an operator.py) must not shadow
            # the standard library's operator module in the engine's interpreter.
            done = subprocess.run(
                [python, "-P", str(PARSE_SCRIPT), str(out)],
                input=json.dumps(request),
                capture_output=True,
                text=True,
                timeout=1800,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RuntimeError(f"{engine}: cannot run {python}: {error}") from error
        if done.returncode != 0 or not out.is_file():
            tail = (done.stderr or done.stdout)[-2000:]
            raise RuntimeError(f"{engine}: {python} failed (exit {done.returncode}):\n{tail}")
        answer: dict[str, Any] = json.loads(out.read_text())
        return answer


# --- docs/engines.md ------------------------------------------------------------------------


def engine_version(engine: str) -> str:
    """The release an engine's default image runs: its tag, less a leading ``v``."""
    image = ENGINES[engine].default_image  # type: ignore[index]
    return image.rsplit(":", 1)[-1].removeprefix("v")


def _added(base: EngineCommand, built: EngineCommand) -> str:
    """What ``built`` has that ``base`` lacks: its inserted or changed args, and env."""
    a, b = list(base.args), list(built.args)
    chunks = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
    parts = [" ".join(b[j1:j2]) for op, _, _, j1, j2 in chunks if op in ("insert", "replace")]
    parts += [f"{k}={v}" for k, v in built.env if (k, v) not in base.env]
    return "<br>".join(f"`{p}`" for p in parts) or "(default)"


def render_matrix() -> str:
    """The support matrix: one row per field case, one column per engine and version."""
    engines = list(ENGINES)
    bases = {e: build(e, Case("base", {})) for e in engines}
    head = "| field = value | " + " | ".join(f"{e} {engine_version(e)}" for e in engines) + " |"
    rows = [head, "|" + " --- |" * (len(engines) + 1)]
    refusals: list[str] = []
    for case in field_cases():
        cells = []
        for engine in engines:
            built, base = build(engine, case), bases[engine]
            if isinstance(built, UnsupportedSpec):
                cells.append("refused")
                refusals.append(f"- {engine}, `{case.label}`: {'; '.join(built.problems)}")
            else:
                assert isinstance(base, EngineCommand)
                cells.append(_added(base, built))
        rows.append(f"| `{case.label}` | " + " | ".join(cells) + " |")
    notes = ["", "Refused (the model gets `Ready=False` with these words, no pod):", "", *refusals]
    return "\n".join(rows + notes) + "\n"


def render_run(answers: Sequence[dict[str, Any]], lines: dict[str, list[Line]], day: str) -> str:
    """The record of one check: date, engines and versions, lines parsed, failures."""
    out = [f"Last run {day}:", ""]
    for answer in answers:
        engine, results = answer["engine"], answer["results"]
        failed = [r for r in results if not r["ok"]]
        kinds = [line.kind for line in lines[engine]]
        counts = ", ".join(f"{kinds.count(k)} {k}" for k in ("field", "example", "golden"))
        verdict = "all accepted." if not failed else f"{len(failed)} refused:"
        out.append(
            f"- {engine} {answer['version']} (PyPI): {len(results)} command lines ({counts}), "
            + verdict
        )
        out += [f"  - `{lines[engine][r['id']].source}`: {r['error']}" for r in failed]
    return "\n".join(out) + "\n"


def replace_between(text: str, markers: tuple[str, str], body: str) -> str:
    """``text`` with what lies between the two marker lines replaced by ``body``.

    Raises:
        ValueError: a marker is missing.
    """
    begin, end = markers
    if begin not in text or end not in text:
        raise ValueError(f"markers {begin} ... {end} not found")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}{end}{tail}"


# --- the command ----------------------------------------------------------------------------


def cmd_engine_check(args: argparse.Namespace) -> int:
    """Parse every line with each given engine; 1 if any is refused or a version differs."""
    repo = Path(args.repo)
    lines = all_lines(repo)
    by_engine: dict[str, list[Line]] = {e: [ln for ln in lines if ln.engine == e] for e in ENGINES}
    answers, failed = [], 0
    for item in args.engine_python:
        engine, _, python = item.partition("=")
        if engine not in by_engine or not python:
            print(f"--engine-python {item!r}: want ENGINE=PYTHON, ENGINE one of "
                  f"{', '.join(ENGINES)}", file=sys.stderr)  # fmt: skip
            return 2
        try:
            answer = parse_with_engine(python, engine, by_engine[engine])
        except RuntimeError as error:
            print(error, file=sys.stderr)
            return 1
        if answer["version"] != engine_version(engine):
            print(f"{engine}: {python} has {answer['version']}, the default image runs "
                  f"{engine_version(engine)} (reconcile/engines.py)", file=sys.stderr)  # fmt: skip
            failed += 1
        for result in answer["results"]:
            if not result["ok"]:
                failed += 1
                source = by_engine[engine][result["id"]].source
                print(f"{engine}: {source}: {result['error']}", file=sys.stderr)
        print(f"{engine} {answer['version']}: {len(answer['results'])} command lines parsed")
        answers.append(answer)
    if args.docs:
        docs = Path(args.docs)
        text = replace_between(docs.read_text(), MATRIX_MARKERS, render_matrix())
        if answers:
            day = datetime.now(UTC).date().isoformat()
            text = replace_between(text, RUN_MARKERS, render_run(answers, by_engine, day))
        docs.write_text(text)
        print(f"wrote {docs}")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``inferscale engine-check``."""
    parser = sub.add_parser(
        "engine-check",
        help="parse every generated engine command line with the engine's own parser",
    )
    parser.add_argument(
        "--engine-python",
        action="append",
        default=[],
        metavar="ENGINE=PYTHON",
        help="the Python of a venv where ENGINE (vllm, sglang) is installed (repeatable)",
    )
    parser.add_argument("--repo", default=".", help="repository root (examples/, tests/golden/)")
    parser.add_argument("--docs", help="rewrite the matrix (and the run record) in this file")
    parser.set_defaults(func=cmd_engine_check)
