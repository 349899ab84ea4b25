"""``inferscale whatif``: replay a request trace against autoscaling policies in virtual time.

Reads the trace, runs each policy through ``inferscale.whatif`` and prints a table (or JSON
with ``--json``); ``--plots DIR`` also writes PNG plots. Bad input (a missing or garbled trace,
an impossible option) prints one line on standard error and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, replace
from typing import Any

import yaml
from pydantic import ValidationError

from inferscale.api.v1alpha1.inference_provider import KIND as PROVIDER_KIND
from inferscale.api.v1alpha1.inference_provider import InferenceProvider
from inferscale.autoscaler.presets import DEFAULT_PRESET as DEFAULT_OUR_PRESET
from inferscale.autoscaler.presets import PRESETS as OUR_PRESETS
from inferscale.autoscaler.spillcost import MAX_PRICE_PER_HOUR, hourly_spend_cap
from inferscale.protocol.defaults import IN_FLIGHT_PER_REPLICA
from inferscale.sim.presets import GPU_HOUR_PRICES, PRESETS
from inferscale.sim.startup import WeightSource, plan_startup, profile_for
from inferscale.whatif.cluster import SIM_STRATEGIES, SimConfig
from inferscale.whatif.compare import (
    compare,
    initial_replicas,
    our_params,
    prompt_token_budget,
    sized_by_slo,
)
from inferscale.whatif.policies import ALL_POLICY_NAMES, POLICY_NAMES, known_policy
from inferscale.whatif.report import Prices, render_table, summarize, to_json
from inferscale.whatif.trace import TRACE_FORMATS, Trace, TraceError, load_trace

DEFAULT_PRESET = "llama-3.1-8b-h100"
BAD_INPUT = 2
DEFAULT_COLD_START = 60.0
"""Seconds to ready without ``--cold-start`` or ``--cache`` (the H100 preset's from the network)."""


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _not_negative(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    return parse


def _price(text: str) -> float:
    """A price: a finite number from 0 to :data:`MAX_PRICE_PER_HOUR` (more is a unit slip)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_PRICE_PER_HOUR:
        raise argparse.ArgumentTypeError(
            f"must be a price from 0 to {MAX_PRICE_PER_HOUR:g}, got {text}"
        )
    return value


def _quantile(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _target(text: str) -> float | str:
    if text == "auto":
        return text
    return float(_positive(float)(text))


def _tokens(text: str) -> int | str:
    if text == "auto":
        return text
    return int(_positive(int)(text))


def register(subparsers: Any) -> None:
    """Add the ``whatif`` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "whatif",
        help="replay a trace against autoscaling policies in virtual time (docs/autoscaling.md)",
        description="Replay a request trace through simulated replicas, the router's picker "
        "and each autoscaling policy, in virtual time; print SLO attainment, TTFT and "
        "GPU-hours per policy.",
    )
    p.add_argument("--trace", required=True, help="trace file (Azure CSV or Mooncake JSONL)")
    p.add_argument("--trace-format", choices=TRACE_FORMATS, help="default: detect")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET, help="replica latency model"
    )
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--cold-start", type=_not_negative(float), help=f"seconds to ready ({DEFAULT_COLD_START:g})"
    )
    start.add_argument(
        "--cache",
        choices=("warm", "cold"),
        help="cold start from the preset's start-up phases: weights from a filled cache (warm) "
        "or downloaded (cold); docs/sim.md",
    )
    p.add_argument("--slo-ttft", type=_positive(float), default=2.0, help="TTFT target, s (2)")
    p.add_argument(
        "--target",
        type=_target,
        default=float(IN_FLIGHT_PER_REPLICA),
        help="in-flight requests per replica for request-based policies "
        f"({IN_FLIGHT_PER_REPLICA}, the API default), or 'auto': the largest at which the "
        "oracle meets 99%% of the SLO",
    )
    p.add_argument("--min-replicas", type=_not_negative(int), default=1, help="(1)")
    p.add_argument("--max-replicas", type=_positive(int), default=20, help="(20)")
    p.add_argument(
        "--scale-to-zero-delay",
        type=_not_negative(float),
        help="idle seconds before zero, with --min-replicas 0 (600)",
    )
    p.add_argument(
        "--initial-replicas",
        type=_not_negative(int),
        help="replicas ready at the start (default: what the oracle wants then)",
    )
    p.add_argument("--spillover", action="store_true", help="spill to a hosted provider")
    p.add_argument(
        "--spill-at",
        type=_positive(float),
        help="spill when every ready replica has this many in flight (default: --target)",
    )
    p.add_argument(
        "--spill-prompt-tokens",
        type=_tokens,
        metavar="N|auto",
        help="also spill when every ready replica would have more than N prompt tokens "
        "waiting for a first token (spillover.promptTokensPerReplica); auto: the SLO x the "
        "preset's prefill rate x 0.8",
    )
    p.add_argument(
        "--strategy",
        choices=SIM_STRATEGIES,
        default="leastInFlight",
        help="the router's picker (leastInFlight)",
    )
    _add_ours_options(p)
    p.add_argument(
        "--policies",
        default=",".join(POLICY_NAMES),
        help=f"comma-separated, in table order ({','.join(POLICY_NAMES)}; also "
        "ours-economy, ours-balanced, ours-latency, and fixed-N: N replicas standing)",
    )
    _add_slice_and_price_options(p)
    p.add_argument("--plots", metavar="DIR", help="write load/replicas/ttft PNGs here")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=cmd_whatif)


def _add_ours_options(p: argparse.ArgumentParser) -> None:
    """Our policy's preset, its learned floor and the route's spend cap."""
    p.add_argument(
        "--learned-floor",
        type=_quantile,
        metavar="Q",
        help="ours keeps the Q quantile of recent bursts' wants standing (the preset's)",
    )
    p.add_argument(
        "--ours-preset",
        choices=sorted(OUR_PRESETS),
        default=DEFAULT_OUR_PRESET,
        help="the API preset ours runs (spec.autoscaling.preset; balanced); "
        "ours-economy, ours-balanced and ours-latency in --policies run one each",
    )
    p.add_argument(
        "--spend-cap",
        type=_price,
        metavar="PER_HOUR",
        help="the route's spend.maxPerHour for ours' cost-aware mode (none)",
    )
    p.add_argument(
        "--spend-cap-per-day",
        type=_price,
        metavar="PER_DAY",
        help="the route's spend.maxPerDay: ours' cost-aware mode plans within the tighter of "
        "--spend-cap and this / 24 (none)",
    )


def _add_slice_and_price_options(p: argparse.ArgumentParser) -> None:
    """The trace-slice and price groups of ``whatif``'s options."""
    window = p.add_argument_group("trace slice")
    window.add_argument("--start", type=_not_negative(float), default=0.0, help="skip seconds")
    window.add_argument("--duration", type=_positive(float), help="keep seconds after --start")
    window.add_argument("--limit", type=_positive(int), help="keep the first N requests")
    window.add_argument(
        "--speedup", type=_positive(float), default=1.0, help="divide inter-arrival times"
    )
    prices = p.add_argument_group(
        "cost = GPU-hours x price + spilled tokens x the provider's prices"
    )
    prices.add_argument(
        "--gpu-hour-price",
        type=_price,
        help="per accelerator-hour (default: the preset's list price, sim/presets.py)",
    )
    prices.add_argument(
        "--provider",
        metavar="FILE",
        help="an InferenceProvider manifest: the spill prices are its model's prices per "
        "million input and output tokens",
    )
    prices.add_argument(
        "--provider-model", metavar="NAME", help="which of the provider's models (if several)"
    )
    prices.add_argument(
        "--spill-price-in",
        type=_price,
        help="per million prompt tokens spilled (overrides --provider's)",
    )
    prices.add_argument(
        "--spill-price-out",
        type=_price,
        help="per million output tokens spilled (overrides --provider's)",
    )


def _fail(message: str) -> int:
    print(f"inferscale whatif: {message}", file=sys.stderr)
    return BAD_INPUT


def provider_prices(path: str, model: str | None) -> tuple[float, float]:
    """Input and output prices per million tokens of ``model`` in an InferenceProvider file.

    Raises:
        ValueError: an unreadable or invalid manifest, an unknown or ambiguous model, or a
            model without both prices (a price left out would silently cost nothing).
    """
    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        one_line = " ".join(str(error).split())  # YAML's messages span several lines
        raise ValueError(f"cannot read provider {path}: {one_line}") from None
    found = [d for d in docs if isinstance(d, dict) and d.get("kind") == PROVIDER_KIND]
    if len(found) != 1:
        raise ValueError(f"{path}: expected one InferenceProvider, found {len(found)}")
    try:
        provider = InferenceProvider.model_validate(found[0])
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ValueError(f"{path}: invalid InferenceProvider: {where}: {first['msg']}") from None
    names = [m.name for m in provider.spec.models]
    if model is None and len(names) > 1:
        raise ValueError(f"{path} offers {', '.join(names)}: pick one with --provider-model")
    chosen = next((m for m in provider.spec.models if model in (None, m.name)), None)
    if chosen is None:
        raise ValueError(f"{path} has no model {model!r}; it offers {', '.join(names)}")
    missing = [
        alias
        for field, alias in (
            ("input_price_per_million_tokens", "inputPricePerMillionTokens"),
            ("output_price_per_million_tokens", "outputPricePerMillionTokens"),
        )
        if field not in chosen.model_fields_set
    ]
    if missing:
        raise ValueError(f"{path}: model {chosen.name} has no {' or '.join(missing)}")
    return chosen.input_price_per_million_tokens, chosen.output_price_per_million_tokens


def _prices(args: argparse.Namespace) -> tuple[Prices, dict[str, str]]:
    """The run's prices and where each came from; ValueError when spill prices are missing."""
    gpu = GPU_HOUR_PRICES[args.preset] if args.gpu_hour_price is None else args.gpu_hour_price
    sources = {
        "gpu_hour": f"list price of {args.preset}"
        if args.gpu_hour_price is None
        else "--gpu-hour-price"
    }
    spill_in, spill_out = args.spill_price_in, args.spill_price_out
    if args.provider is not None:
        from_file = provider_prices(args.provider, args.provider_model)
        spill_in = from_file[0] if spill_in is None else spill_in
        spill_out = from_file[1] if spill_out is None else spill_out
        sources["spill"] = f"{args.provider}" + (
            f" ({args.provider_model})" if args.provider_model else ""
        )
    elif args.provider_model is not None:
        raise ValueError("--provider-model needs --provider")
    if spill_in is None or spill_out is None:
        if args.spillover:
            raise ValueError(
                "--spillover needs the provider's prices: --provider FILE, or both "
                "--spill-price-in and --spill-price-out"
            )
        return Prices(gpu, 0.0, 0.0), {**sources, "spill": "none (no spillover)"}
    sources.setdefault("spill", "--spill-price-in/--spill-price-out")
    return Prices(gpu, spill_in, spill_out), sources


def cost_mode_words(trace: Trace, config: SimConfig) -> str:
    """Whether ours' cost-aware mode runs in this run, and why not when it falls back."""
    if not config.spillover:
        return "off (no spillover)"
    params = our_params(config, trace)
    if not params.cost_aware:
        return f"off (the {config.ours_preset} preset)"
    fallback = params.cost_mode_fallback
    return "on" if fallback is None else f"falls back to the ordinary policy: {fallback}"


def _header(trace: Trace, preset: str, config: SimConfig) -> str:
    """The line above the table: the trace and the run's settings."""
    return (
        f"{trace.name}: {len(trace.requests)} requests over {trace.span:.0f} s, {preset}, "
        f"cold start {config.cold_start_s:g} s, SLO TTFT {config.slo_ttft_s:g} s, target "
        f"{config.target:g} in flight per replica (oracle {config.oracle_target:g}: 99% of "
        f"the SLO), replicas {config.min_replicas}.."
        f"{config.max_replicas} (start {config.initial_replicas})"
        + f", {config.strategy}, ours {config.ours_preset}"
        + (
            f", ours' learned floor p{config.learned_floor_quantile * 100:g}"
            if config.learned_floor_quantile
            else ""
        )
        + (f", spillover at {config.spill_threshold:g}" if config.spillover else "")
        + (
            f" or {config.spill_prompt_tokens_per_replica} prompt tokens"
            if config.spillover and config.spill_prompt_tokens_per_replica
            else ""
        )
        + (f", ours' cost-aware mode {cost_mode_words(trace, config)}" if config.spillover else "")
    )


def cold_start_seconds(preset: str, seconds: float | None, cache: str | None) -> float:
    """``--cold-start``, else the preset's start with the weights from the cache or the network.

    The network start is the preset's ``startup_delay_seconds``; a warm cache saves the download
    (``sim/startup.py``). Neither flag: :data:`DEFAULT_COLD_START`.
    """
    if seconds is not None:
        return seconds
    if cache is None:
        return DEFAULT_COLD_START
    source: WeightSource = "cache" if cache == "warm" else "network"
    plan = plan_startup(profile_for(preset), PRESETS[preset].startup_delay_seconds, source)
    return plan.total


def _config(args: argparse.Namespace, trace: Trace, prices: Prices) -> SimConfig:
    """The run's SimConfig from the options, its oracle sized by the SLO on ``trace``."""
    engine = PRESETS[args.preset]
    spill_tokens = args.spill_prompt_tokens
    if spill_tokens == "auto":
        spill_tokens = prompt_token_budget(engine, args.slo_ttft)
    config = SimConfig(
        engine=engine,
        cold_start_s=cold_start_seconds(args.preset, args.cold_start, args.cache),
        slo_ttft_s=args.slo_ttft,
        target=float(IN_FLIGHT_PER_REPLICA) if args.target == "auto" else args.target,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        scale_to_zero_delay_s=args.scale_to_zero_delay,
        spillover=args.spillover,
        spill_in_flight_per_replica=args.spill_at,
        spill_prompt_tokens_per_replica=spill_tokens,
        strategy=args.strategy,
        learned_floor_quantile=args.learned_floor,
        ours_preset=args.ours_preset,
        gpu_hour_price=prices.gpu_hour,
        spill_price_in=prices.input_per_million,
        spill_price_out=prices.output_per_million,
        spill_spend_cap_per_hour=hourly_spend_cap(args.spend_cap, args.spend_cap_per_day)[0],
    )
    # The oracle is sized by the SLO whatever --target says; --target auto is the same figure.
    config = sized_by_slo(trace, config)
    if args.target == "auto":
        config = replace(config, target=config.oracle_target or config.target)
    initial = args.initial_replicas
    if initial is None:
        initial = initial_replicas(trace, config)
    config = replace(config, initial_replicas=min(max(initial, args.min_replicas), 10_000))
    return config


def cmd_whatif(args: argparse.Namespace) -> int:
    """Run the comparison; 2 on bad input."""
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    unknown = [n for n in names if not known_policy(n)]
    if unknown or not names:
        return _fail(f"unknown policies {unknown or names}; known: {', '.join(ALL_POLICY_NAMES)}")
    if args.min_replicas > args.max_replicas:
        return _fail("--min-replicas must not exceed --max-replicas")
    if args.scale_to_zero_delay is not None and args.min_replicas != 0:
        return _fail("--scale-to-zero-delay needs --min-replicas 0")
    try:
        prices, sources = _prices(args)
        trace = load_trace(args.trace, args.trace_format).sliced(
            start=args.start, duration=args.duration, limit=args.limit, speedup=args.speedup
        )
    except (TraceError, ValueError) as error:
        return _fail(str(error))
    started = time.monotonic()
    config = _config(args, trace, prices)
    results = compare(trace, config, names)
    summaries = [summarize(r, prices) for r in results]
    meta: dict[str, Any] = {
        "trace": trace.name,
        "format": trace.format,
        "requests": len(trace.requests),
        "span_s": round(trace.span, 3),
        "preset": args.preset,
        **{
            k: v
            for k, v in asdict(config).items()
            if k not in ("engine", "drain_s", "scrape_interval_s")
        },
        "prices": {**asdict(prices), "sources": sources},
        "ours_cost_mode": cost_mode_words(trace, config),
        "wall_s": round(time.monotonic() - started, 2),
    }
    if args.plots:
        from inferscale.whatif.plots import write_plots

        title = (
            f"{trace.name}: {args.preset}, cold start {config.cold_start_s:g} s, "
            f"target {config.target:g}/replica, SLO {config.slo_ttft_s:g} s, {config.strategy}"
            + (", spillover" if config.spillover else "")
        )
        try:
            meta["plots"] = [str(p) for p in write_plots(results, args.plots, title)]
        except OSError as error:
            return _fail(f"cannot write plots to {args.plots}: {error}")
    if args.json:
        print(to_json(summaries, meta))
        return 0
    print(_header(trace, args.preset, config))
    print(render_table(summaries))
    rejected = summaries[0].rejected if summaries else 0
    if rejected:
        print(f"({rejected} requests longer than the engine accepts were left out)")
    print(f"({meta['wall_s']} s)")
    for path in meta.get("plots", []):
        print(f"wrote {path}")
    return 0
