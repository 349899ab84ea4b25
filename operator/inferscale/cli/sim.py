"""``inferscale sim``: run the simulated inference engine (flags over ``INFERSCALE_SIM_*`` env).

Flags that are not given leave the setting to the environment (pydantic-settings, prefix
``INFERSCALE_SIM_``, nested with ``__``) and then to the defaults, because the process launcher
starts the sim as a pod with both env and args. Engine flags are generated from
``EngineParams``, so every knob of the latency model has one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from inferscale.sim.model import EngineParams
from inferscale.sim.presets import PRESETS
from inferscale.sim.server import process_age, serve
from inferscale.sim.settings import MetricsDialect, SimSettings
from inferscale.sim.startup import profile_for
from inferscale.sim.weights import preload

_ENGINE = "engine."
_FAIL = "failures."
_FAILURE_FLAGS: dict[str, tuple[str, type, str]] = {
    "--fail-error-rate": ("error_rate", float, "fraction of requests answered with an error"),
    "--fail-error-status": ("error_status", int, "HTTP status of injected errors (500)"),
    "--fail-crash-after": ("crash_after_requests", int, "exit abruptly on request N+1"),
    "--fail-hang-after": ("hang_after_requests", int, "stop answering from request N+1 on"),
}


def register(subparsers: Any) -> None:
    """Add the ``sim`` subcommand to the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "sim",
        help="run the simulated inference engine (OpenAI API, vLLM metrics, no GPU)",
        description="A GPU-free engine with a latency model; see docs/sim.md.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--host", help="address to bind (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="TCP port (default 8000)")
    p.add_argument("--model", help="served model name")
    p.add_argument("--preset", choices=sorted(PRESETS), help="engine preset")
    p.add_argument("--metrics-dialect", choices=get_args(MetricsDialect), help="metric names")
    p.add_argument("--seed", type=int, help="seed of output text and injected failures")
    p.add_argument("--default-max-tokens", type=int, help="output length without max_tokens")
    p.add_argument("--max-request-bytes", type=int, help="largest body accepted (413 beyond)")
    p.add_argument("--embedding-dimensions", type=int, help="embedding vector length")
    p.add_argument("--shutdown-grace-seconds", type=float, help="SIGTERM grace period")
    p.add_argument(
        "--kv-events-config",
        help="vLLM's KV-events option (JSON): publish cache events on a ZMQ PUB socket",
    )
    cache = p.add_argument_group("weight cache (docs/sim.md, start-up phases)")
    cache.add_argument("--weights-cache", help="cache directory: a filled one skips the download")
    cache.add_argument(
        "--preload", action="store_true", help="fill --weights-cache at the network rate and exit"
    )
    cache.add_argument("--preload-report", help='with --preload, write {"bytes": N} to this file')
    lora = p.add_argument_group("LoRA adapters (as vLLM; --max-loras is an engine knob)")
    lora.add_argument("--enable-lora", action="store_true", help="serve LoRA adapters")
    lora.add_argument("--lora-modules", nargs="+", help="adapters loaded at start, NAME=PATH")
    lora.add_argument("--lora-load-seconds", type=float, help="time one adapter load takes")
    engine = p.add_argument_group("engine (overrides the preset)")
    for name, info in EngineParams.model_fields.items():
        kind: type = int if info.annotation is int else float
        engine.add_argument(
            f"--{name.replace('_', '-')}",
            dest=_ENGINE + name,
            type=kind,
            help=info.description,
        )
    failures = p.add_argument_group("failure injection")
    for flag, (field, kind, text) in _FAILURE_FLAGS.items():
        failures.add_argument(flag, dest=_FAIL + field, type=kind, help=text)
    p.set_defaults(func=cmd_sim)


def settings_from_args(args: argparse.Namespace) -> SimSettings:
    """Flags given on the command line, over the environment, over the defaults."""
    given = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    engine = {k.removeprefix(_ENGINE): v for k, v in given.items() if k.startswith(_ENGINE)}
    fails = {k.removeprefix(_FAIL): v for k, v in given.items() if k.startswith(_FAIL)}
    plain = {k: v for k, v in given.items() if not k.startswith((_ENGINE, _FAIL))}
    if engine:
        plain["engine"] = engine
    if fails:
        plain["failures"] = fails
    # pydantic-settings merges init values over env values, nested dicts key by key.
    return SimSettings(**plain)


def cmd_sim(args: argparse.Namespace) -> int:
    """Run the sim until SIGTERM; 2 on invalid settings."""
    try:
        settings = settings_from_args(args)
        settings.engine_params()
    except (ValidationError, KeyError) as error:
        print(f"inferscale sim: invalid settings: {error}", file=sys.stderr)
        return 2
    if settings.preload:
        return run_preload(settings)
    try:
        asyncio.run(serve(settings, started_before=process_age()))
    except OSError as error:  # a port in use: say which, without a traceback
        print(f"inferscale sim: {error}", file=sys.stderr)
        return 1
    return 0


def run_preload(settings: SimSettings) -> int:
    """Fill the weight cache as the preset's download would, report the bytes; 1 on an I/O error."""
    assert settings.weights_cache is not None  # the settings refuse preload without it
    plan = settings.startup_plan()
    seconds = profile_for(settings.preset).download_seconds() * plan.scale
    print(
        f"inferscale sim: preloading {settings.model} ({settings.preset}) into "
        f"{settings.weights_cache}: {seconds:.1f} s at the network rate",
        flush=True,
    )
    try:
        manifest = asyncio.run(
            preload(settings.weights_cache, settings.model, settings.preset, seconds)
        )
        report = json.dumps({"bytes": manifest.bytes})
        if settings.preload_report is not None:
            Path(settings.preload_report).write_text(report)
    except OSError as error:
        print(f"inferscale sim: cannot fill the weight cache: {error}", file=sys.stderr, flush=True)
        return 1
    print(f"inferscale sim: cached {report}", flush=True)
    return 0
