"""Parse command lines with an inference engine's own argument parser (runs in the engine's venv).

``inferscale engine-check`` (:mod:`inferscale.cli.engine_check`) runs this file as a script with
the Python of a virtual environment where vLLM or SGLang is installed, so it imports nothing of
inferscale: only the standard library and the engine. It reads ``{"engine": NAME, "lines":
[{"id": ..., "args": [...]}]}`` as JSON on standard input and writes ``{"engine", "version",
"results": [{"id", "ok", "error"}]}`` to the file named by its one argument (the engines log to
standard output, so the answer goes to a file of its own).

Each line goes through what the engine's entry point does with its arguments before it loads a
model: vLLM's ``vllm serve`` subparser (``FlexibleArgumentParser``) and its ``validate``, plus the
keys and method of ``--speculative-config`` against ``SpeculativeConfig``; SGLang's
``ServerArgs.add_cli_args`` parser. An unknown flag, a value outside a flag's choices or a bad
type is an error with the engine's own message.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.metadata
import io
import json
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

Check = Callable[[list[str]], None]
"""Parses one command line's args; raises (or exits, as argparse does) when it is refused."""


def vllm_check() -> Check:
    """``vllm serve ARGS`` as vLLM's CLI parses and validates it."""
    platforms: Any = importlib.import_module("vllm.platforms")
    cpu: Any = importlib.import_module("vllm.platforms.cpu")
    # No GPU here: vLLM finds no platform and refuses to build its parser ("Failed to infer
    # device type"). The CPU platform's parser is the same argparse definition.
    platforms._current_platform = cpu.CpuPlatform()
    serve: Any = importlib.import_module("vllm.entrypoints.cli.serve")
    utils: Any = importlib.import_module("vllm.utils")
    config: Any = importlib.import_module("vllm.config")
    command = serve.ServeSubcommand()
    parser = utils.FlexibleArgumentParser(prog="vllm")
    command.subparser_init(parser.add_subparsers(dest="subparser"))
    spec_fields = {f.name for f in dataclasses.fields(config.SpeculativeConfig)}
    methods = _literal_values(typing.get_type_hints(config.SpeculativeConfig)["method"])

    def check(args: list[str]) -> None:
        parsed = parser.parse_args(["serve", *args])
        command.validate(parsed)
        spec = parsed.speculative_config or {}
        unknown = sorted(set(spec) - spec_fields)
        if unknown:
            raise ValueError(f"--speculative-config: unknown keys {unknown}")
        if "method" in spec and spec["method"] not in methods:
            raise ValueError(f"--speculative-config: method {spec['method']!r} not in {methods}")

    return check


def sglang_check() -> Check:
    """``python3 -m sglang.launch_server ARGS`` as SGLang's ``ServerArgs`` parser reads it."""
    server_args: Any = importlib.import_module("sglang.srt.server_args")
    parser = argparse.ArgumentParser(prog="sglang.launch_server")
    server_args.ServerArgs.add_cli_args(parser)

    def check(args: list[str]) -> None:
        parser.parse_args(args)

    return check


CHECKS: dict[str, tuple[str, Callable[[], Check]]] = {
    "vllm": ("vllm", vllm_check),
    "sglang": ("sglang", sglang_check),
}
"""Engine name to (PyPI distribution, parser factory)."""


def _literal_values(annotation: Any) -> list[Any]:
    """The values of a ``Literal`` (inside ``Optional`` too)."""
    values: list[Any] = []
    for arg in typing.get_args(annotation):
        values += _literal_values(arg) if typing.get_args(arg) else [arg]
    return [v for v in values if v is not type(None)]


def check_lines(check: Check, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``check`` on each line; an argparse exit or an exception is that line's error."""
    results = []
    for line in lines:
        stderr = io.StringIO()
        error: str | None = None
        try:
            with contextlib.redirect_stderr(stderr):
                check([str(a) for a in line["args"]])
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                # argparse prints usage, then "prog: error: ..." as its last line.
                said = stderr.getvalue().strip().splitlines()
                error = said[-1] if said else f"exit {exit_.code}"
        except Exception as exc:  # any refusal by the engine is the answer, whatever its type
            error = f"{type(exc).__name__}: {exc}"
        results.append({"id": line["id"], "ok": error is None, "error": error})
    return results


def main(argv: list[str]) -> int:
    """Read the request on stdin, write the results to ``argv[0]``."""
    request = json.load(sys.stdin)
    distribution, factory = CHECKS[request["engine"]]
    results = check_lines(factory(), request["lines"])
    answer = {
        "engine": request["engine"],
        "version": importlib.metadata.version(distribution),
        "results": results,
    }
    Path(argv[0]).write_text(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
