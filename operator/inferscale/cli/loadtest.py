"""``inferscale loadtest``: open-loop load against an OpenAI endpoint, with a live view and summary.

Reads ``OPENAI_API_KEY`` when ``--api-key`` is not given; the key is sent, never printed. Exit
status: 0 when the failed ratio is within ``--max-error-ratio``, 1 when it is not (or the
``--json-file`` could not be written), 2 for bad arguments, an unreadable trace or an endpoint
that cannot be reached (found by the preflight ``GET /v1/models`` before any load), 130 when
interrupted (the summary is still printed).
See docs/loadtest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from inferscale.loadtest.arrivals import (
    Arrival,
    ScheduleError,
    Stage,
    constant_schedule,
    parse_duration,
    parse_stages,
    poisson_arrivals,
    resize,
    schedule_seconds,
    stage_at,
)
from inferscale.loadtest.report import Phase, RunInfo, Summary, render_summary
from inferscale.loadtest.trace import TraceError, TraceFormat, TraceStats, read_trace

if TYPE_CHECKING:
    from inferscale.loadtest.observe import ClusterWatch
    from inferscale.loadtest.runner import Runner

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEFAULT_DURATION = "60s"


class UsageError(Exception):
    """Arguments that cannot work together; printed with exit status 2."""


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ScheduleError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 0 < value < float("inf"):  # NaN fails both comparisons
            raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
        return value

    return parse


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


def register(subparsers: Any) -> None:
    """Add the ``loadtest`` subcommand to the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "loadtest",
        help="open-loop load test of an OpenAI-compatible endpoint, with a live view",
        description=(
            "Send open-loop requests (Poisson, staged rates, or a replayed trace) to an "
            "OpenAI-compatible endpoint; show rates, time to first token, errors and, when the "
            "cluster is visible, InferenceModel replicas live; print a summary. See "
            "docs/loadtest.md."
        ),
    )
    _endpoint_arguments(p.add_argument_group("endpoint"))
    _load_arguments(p.add_argument_group("load (one of --rate, --stages, --trace)"))
    cluster = p.add_argument_group("cluster (optional: replicas per InferenceModel)")
    cluster.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config")
    cluster.add_argument("--namespace", "-n", help="InferenceModels of one namespace only")
    cluster.add_argument("--no-cluster", action="store_true", help="do not read the cluster")
    _output_arguments(p.add_argument_group("output"))
    p.set_defaults(func=cmd_loadtest)


def _endpoint_arguments(target: Any) -> None:
    """Where the load goes, and how each request is sent."""
    target.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    target.add_argument("--model", help="model name to send (default: the first /v1/models)")
    target.add_argument("--api-key", help="bearer token (default: $OPENAI_API_KEY)")
    target.add_argument("--api", choices=("chat", "completions"), default="chat")
    target.add_argument(
        "--stream", action=argparse.BooleanOptionalAction, default=True, help="stream answers"
    )
    target.add_argument("--timeout", type=_positive(float), default=60.0, help="per request, s")
    target.add_argument("--preflight-timeout", type=_positive(float), default=5.0)
    target.add_argument(
        "--ignore-eos", action="store_true", help="send ignore_eos (vLLM, SGLang; not OpenAI)"
    )


def _load_arguments(load: Any) -> None:
    """The load's shape (rate, stages or a trace) and the requests' sizes."""
    shape = load.add_mutually_exclusive_group(required=True)
    shape.add_argument("--rate", type=_positive(float), help="Poisson arrivals, requests/s")
    shape.add_argument("--stages", help="staged rates, e.g. 30s@2,60s@20,30s@2 (or 30s@2..20)")
    shape.add_argument("--trace", type=Path, help="replay an Azure 2023 CSV or Mooncake JSONL")
    load.add_argument(
        "--duration",
        type=_duration,
        help=f"how long to send (--rate default {DEFAULT_DURATION}; caps stages and traces)",
    )
    load.add_argument("--ramp", type=_duration, default=0.0, help="--rate: climb from 0 over")
    load.add_argument(
        "--trace-format", choices=("auto", "azure", "mooncake"), default="auto", help="of --trace"
    )
    load.add_argument("--speedup", type=_positive(float), default=1.0, help="trace time / this")
    load.add_argument("--limit", type=_positive(int), help="replay at most this many trace rows")
    load.add_argument("--prompt-tokens", type=_positive(int), help="prompt size (default 128)")
    load.add_argument("--max-tokens", type=_positive(int), help="output size (default 64)")
    load.add_argument("--max-prompt-tokens", type=_positive(int), help="cap trace prompt sizes")
    load.add_argument("--max-output-tokens", type=_positive(int), help="cap trace output sizes")
    load.add_argument("--seed", type=int, default=0, help="arrival times and prompt text")
    load.add_argument(
        "--max-in-flight",
        type=_positive(int),
        default=256,
        help="concurrency cap; requests due beyond it are dropped (counted as failed)",
    )


def _output_arguments(out: Any) -> None:
    """The live view, the summary, and when the run counts as failed."""
    out.add_argument("--json", action="store_true", help="summary as JSON on stdout")
    out.add_argument(
        "--json-file",
        type=Path,
        metavar="PATH",
        help="also write the JSON summary to PATH (the table still prints; for scripts)",
    )
    out.add_argument("--quiet", "-q", action="store_true", help="no live view")
    out.add_argument(
        "--refresh", type=_positive(float), help="live view interval, s (1 on a terminal, else 5)"
    )
    out.add_argument(
        "--max-error-ratio",
        type=_ratio,
        default=0.0,
        help="exit 1 when (errors + dropped) / requests exceeds this (default 0)",
    )
    out.add_argument(
        "--expect-scaling",
        action="store_true",
        help="exit 1 unless some InferenceModel scaled both up and down during the run",
    )


def _fail(message: str) -> int:
    print(f"inferscale loadtest: {message}", file=sys.stderr)
    return EXIT_USAGE


def _schedule(args: argparse.Namespace) -> list[Stage] | None:
    """The rate stages of ``--rate``/``--stages`` (None for a trace)."""
    if args.trace is not None:
        if args.ramp:
            raise UsageError("--ramp goes with --rate")
        return None
    if args.stages is not None:
        if args.ramp:
            raise UsageError("--ramp goes with --rate; ramp inside a stage with 30s@2..20")
        stages = parse_stages(args.stages)
    else:
        seconds = args.duration if args.duration is not None else parse_duration(DEFAULT_DURATION)
        stages = constant_schedule(args.rate, seconds, args.ramp)
    trace_only = {
        "--speedup": args.speedup != 1.0,
        "--limit": args.limit is not None,
        "--max-prompt-tokens": args.max_prompt_tokens is not None,
        "--max-output-tokens": args.max_output_tokens is not None,
        "--trace-format": args.trace_format != "auto",
    }
    for flag, given in trace_only.items():
        if given:
            raise UsageError(f"{flag} goes with --trace")
    return stages


def _stage_phase(stages: list[Stage]) -> Phase:
    def phase(elapsed: float, _index: int) -> str:
        index, rate = stage_at(stages, elapsed)
        return f"stage {index + 1}/{len(stages)} {stages[index].describe()}  {rate:.1f} req/s now"

    return phase


def _trace_phase(name: str, speedup: float) -> Phase:
    def phase(_elapsed: float, index: int) -> str:
        return f"trace {name} x{speedup:g}  row {index + 1:,}"

    return phase


def _open_trace(
    args: argparse.Namespace, stats: TraceStats, files: contextlib.ExitStack
) -> Iterator[Arrival]:
    """The trace's arrivals, the first one read already so a bad file fails before any load.

    The file stays open (on ``files``) while the arrivals are read, lazily.
    """
    path: Path = args.trace
    try:
        handle = files.enter_context(path.open(encoding="utf-8", newline=""))
    except OSError as error:
        raise UsageError(f"cannot read the trace {path}: {error.strerror or error}") from None
    fmt: TraceFormat | None = None if args.trace_format == "auto" else args.trace_format
    arrivals = read_trace(
        handle, stats, speedup=args.speedup, limit=args.limit, trace_format=fmt, name=path.name
    )
    try:
        # No StopIteration: a trace without a valid row is a TraceError.
        first = next(arrivals)
    except (TraceError, UnicodeDecodeError) as error:
        raise UsageError(str(error)) from None
    return itertools.chain([first], arrivals)


@dataclass
class _Plan:
    """The arrivals to send and how to describe them."""

    arrivals: Iterator[Arrival]
    planned: float | None
    phase: Phase
    load: str
    trace: TraceStats | None


def _plan(args: argparse.Namespace, files: contextlib.ExitStack) -> _Plan:
    """Arrivals from ``--rate``/``--stages`` or ``--trace``; UsageError when they cannot work."""
    stages = _schedule(args)
    if stages is not None:
        planned = schedule_seconds(stages)
        if args.duration is not None and args.stages is not None:
            planned = min(planned, args.duration)
        arrivals = poisson_arrivals(
            stages, random.Random(args.seed), args.prompt_tokens or 128, args.max_tokens or 64
        )
        load = f"stages {','.join(s.describe() for s in stages)}"
        return _Plan(arrivals, planned, _stage_phase(stages), load, None)
    stats = TraceStats()
    arrivals = resize(
        _open_trace(args, stats, files),
        prompt_tokens=args.prompt_tokens,
        output_tokens=args.max_tokens,
        max_prompt_tokens=args.max_prompt_tokens,
        max_output_tokens=args.max_output_tokens,
    )
    load = f"trace {args.trace.name} x{args.speedup:g}"
    if args.limit:
        load += f" (first {args.limit:,} rows)"
    return _Plan(arrivals, args.duration, _trace_phase(args.trace.name, args.speedup), load, stats)


async def _serve(args: argparse.Namespace, api_key: str | None, out: TextIO) -> int:
    if args.expect_scaling and args.no_cluster:
        return _fail("--expect-scaling needs the cluster: drop --no-cluster")
    # aiohttp and the Kubernetes client load here, not with the CLI: `inferscale sim` in a pod
    # starts without them.
    from inferscale.loadtest.client import normalise_url

    with contextlib.ExitStack() as files:
        try:
            base_url = normalise_url(args.url)
            _check_json_file(args.json_file)
            plan = _plan(args, files)
        except (ValueError, UsageError) as error:
            return _fail(str(error))
        return await _load(args, api_key, out, base_url, plan)


async def _load(
    args: argparse.Namespace, api_key: str | None, out: TextIO, base_url: str, plan: _Plan
) -> int:
    """Preflight, then run the plan and report; the exit status."""
    import aiohttp

    from inferscale.loadtest.client import Target, Unreachable, auth_headers, preflight
    from inferscale.loadtest.prompts import PromptBuilder
    from inferscale.loadtest.runner import Runner, RunOptions
    from inferscale.loadtest.view import LiveView

    headers = auth_headers(api_key)
    connector = aiohttp.TCPConnector(limit=args.max_in_flight, limit_per_host=args.max_in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            models = await preflight(session, base_url, headers, args.preflight_timeout)
        except Unreachable as error:
            return _fail(f"the endpoint is unreachable: {error}")
        try:
            model = _model(args.model, models, base_url)
        except UsageError as error:
            return _fail(str(error))
        target = Target(
            base_url=base_url,
            model=model,
            api=args.api,
            stream=args.stream,
            timeout=args.timeout,
            headers=headers,
            ignore_eos=args.ignore_eos,
        )
        info = RunInfo(
            url=base_url,
            model=model,
            api=args.api,
            stream=args.stream,
            load=plan.load,
            seed=args.seed,
            duration=plan.planned,
            max_in_flight=args.max_in_flight,
            max_error_ratio=args.max_error_ratio,
            expect_scaling=args.expect_scaling,
        )
        watch = _watch(args)
        view_stream = sys.stderr if args.json else out
        tty = view_stream.isatty()
        view = None if args.quiet else LiveView(view_stream, tty)
        options = RunOptions(
            info=info,
            max_in_flight=args.max_in_flight,
            refresh_seconds=args.refresh or (1.0 if tty else 5.0),
            drain_seconds=args.timeout + 1.0,
            seed=args.seed,
        )
        runner = Runner(
            options,
            target,
            session,
            PromptBuilder(args.seed),
            phase=plan.phase,
            view=view,
            watch=watch,
            trace=plan.trace,
        )
        summary = await _run_until_signalled(runner, plan, watch)
    _report(summary, args.json, out)
    if args.json_file is not None and not _write_json_file(summary, args.json_file):
        return EXIT_FAILED
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return 0 if summary.passed else EXIT_FAILED


async def _run_until_signalled(runner: Runner, plan: _Plan, watch: ClusterWatch | None) -> Summary:
    """Run the plan; SIGINT or SIGTERM ends it early, and the summary still comes."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await runner.run(plan.arrivals, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if watch is not None:
            watch.close()


def _model(given: str | None, models: list[str] | None, base_url: str) -> str:
    """The model to send: ``--model``, else the endpoint's first (a warning if it lacks it)."""
    if given is None:
        if not models:
            raise UsageError(f"no --model given and {base_url}/v1/models lists none")
        return models[0]
    if models is not None and given not in models:
        print(
            f"inferscale loadtest: warning: {given!r} is not in {base_url}/v1/models "
            f"({', '.join(models[:5]) or 'empty'}); sending anyway",
            file=sys.stderr,
        )
    return given


def _watch(args: argparse.Namespace) -> ClusterWatch | None:
    from inferscale.loadtest.observe import ClusterUnavailable, ClusterWatch, connect_cluster

    if args.no_cluster:
        return None
    try:
        api = connect_cluster(args.kubeconfig)
    except ClusterUnavailable as error:
        if args.kubeconfig:
            # Asked for by name: say so loudly, but the load test itself still runs.
            print(f"inferscale loadtest: warning: {error}", file=sys.stderr)
        return ClusterWatch(None, args.namespace, note=f"cluster not visible: {error}")
    return ClusterWatch(api, args.namespace)


def _report(summary: Summary, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(summary.to_json(), indent=2) + "\n")
    else:
        out.write(render_summary(summary) + "\n")
    out.flush()


def _check_json_file(path: Path | None) -> None:
    """Refuse, before any load, a ``--json-file`` that could not be written at the end."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"--json-file {path} is a directory")
    if not path.parent.is_dir():
        raise UsageError(f"--json-file {path}: the directory {path.parent} does not exist")


def _write_json_file(summary: Summary, path: Path) -> bool:
    """Write the JSON summary to ``path``; say why and return False when that fails."""
    try:
        path.write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        print(
            f"inferscale loadtest: cannot write --json-file {path}: {error.strerror or error}",
            file=sys.stderr,
        )
        return False
    return True


def cmd_loadtest(args: argparse.Namespace) -> int:
    """Run the load test; see the module docstring for the exit status."""
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY") or None
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(args, api_key, sys.stdout))
    return EXIT_INTERRUPTED
