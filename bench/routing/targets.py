#!/usr/bin/env python3
"""Issue 20's targets for the default strategy where engines publish KV events, pass or fail.

Each target compares ``predictedTTFT`` with ``leastInFlight`` in the same run (virtual time,
``virtual.py``: the sims' latency model and the router's pickers over the same requests), and
prints the perfect-cache oracle beside it, so a miss reads against what is possible at all:

1. Never loses, conversation trace: mean TTFT <= 1.0x and p95 <= 1.1x ``leastInFlight``'s at
   every load (``--speedups``) in every window (``--starts``), GPU cache only.
2. With a host tier of 4x the GPU cache on every replica (both strategies), mean TTFT <= 0.5x
   at 1.5x load on the conversation trace; if not, the oracle's ratio is the workload's bound.
   The check is window 0 (``--requests`` rows from row 0); the whole trace is printed after it
   for reference (``--whole-trace``, on by default), with its own oracle, and decides nothing.
3. The prefix-sharing mix (``prefix_workload.py``, defaults): mean TTFT <= 0.5x, and the
   busiest replica serves <= 1.25x the mean number of requests.

  .venv/bin/python bench/routing/targets.py                 # ~10 minutes on 2 shared cores
  .venv/bin/python bench/routing/targets.py --starts 0 --requests 600 --speedups 1,1.5,2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import prefix_workload
import virtual
from workload import Prompts, Row, default_trace, engine_params, read_rows, reuse

from inferscale.router import picking

BASE = "leastInFlight"
CANDIDATE = "predictedTTFT"


def compare(
    rows: list[Row], speedup: float, host_factor: float, replicas: int
) -> dict[str, dict[str, object]]:
    """The base, the candidate and the oracle over the same rows."""
    prompts = Prompts(512)
    params = engine_params("llama-3.1-8b-h100", prompts.scale, 1.0, host_factor)
    return {
        p: virtual.run(
            p,
            rows,
            prompts,
            params,
            replicas=replicas,
            speedup=speedup,
            prefix_blocks=2,
            max_tokens=0,
            load_bound=picking.DEFAULT_LOAD_BOUND,
            ring_points=64,
        )
        for p in (BASE, CANDIDATE, "oracle")
    }


def ratio(results: dict[str, dict[str, object]], who: str, field: str) -> float:
    value = results[who][field]
    base = results[BASE][field]
    assert isinstance(value, float) and isinstance(base, float)
    return value / base


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def never_loses(args: argparse.Namespace) -> bool:
    """Target 1: every window and load."""
    all_ok = True
    for start in (int(s) for s in args.starts.split(",")):
        rows = read_rows(args.trace, start, args.requests)
        print(json.dumps({"window": start, **reuse(rows)}), flush=True)
        for speedup in (float(s) for s in args.speedups.split(",")):
            r = compare(rows, speedup, 0.0, args.replicas)
            mean, p95 = ratio(r, CANDIDATE, "ttft_mean_ms"), ratio(r, CANDIDATE, "ttft_p95_ms")
            ok = mean <= 1.0 and p95 <= 1.1
            all_ok &= ok
            print(
                f"target 1 window {start} speed-up {speedup:g}: mean {mean:.2f}x "
                f"(<= 1.0), p95 {p95:.2f}x (<= 1.1), {BASE} mean "
                f"{r[BASE]['ttft_mean_ms']} ms, oracle {ratio(r, 'oracle', 'ttft_mean_ms'):.2f}x"
                f" {verdict(ok)}",
                flush=True,
            )
    return all_ok


def host_tier_rows(args: argparse.Namespace, rows: list[Row], label: str) -> bool:
    """Target 2's figures over ``rows``: a 4x host tier at 1.5x load; whether <= 0.5x."""
    r = compare(rows, 1.5, 4.0, args.replicas)
    mean = ratio(r, CANDIDATE, "ttft_mean_ms")
    ok = mean <= 0.5
    print(
        f"target 2 {label}, host tier 4x, speed-up 1.5: mean {mean:.3f}x (<= 0.5), p95 "
        f"{ratio(r, CANDIDATE, 'ttft_p95_ms'):.3f}x; the oracle (unbounded cache, best "
        f"placement) reaches {ratio(r, 'oracle', 'ttft_mean_ms'):.3f}x (p95 "
        f"{ratio(r, 'oracle', 'ttft_p95_ms'):.3f}x); hit rate "
        f"{r[CANDIDATE]['prefix_hit_rate']} (host {r[CANDIDATE]['host_hit_rate']}) against "
        f"{r[BASE]['prefix_hit_rate']} {verdict(ok)}",
        flush=True,
    )
    return ok


def host_tier(args: argparse.Namespace) -> bool:
    """Target 2 on window 0 (the check), then on the whole trace (reference only)."""
    rows = read_rows(args.trace, 0, args.requests)
    ok = host_tier_rows(args, rows, f"window 0 (rows 0-{len(rows) - 1}; the check)")
    if args.whole_trace:
        rows = read_rows(args.trace, 0, 0)
        print(json.dumps({"window": "whole trace", **reuse(rows)}), flush=True)
        host_tier_rows(args, rows, f"whole trace (rows 0-{len(rows) - 1}; reference only)")
    return ok


def prefix_mix(args: argparse.Namespace) -> bool:
    """Target 3: the prefix-sharing mix at ``--mix-speedup``."""
    rows = prefix_workload.rows(prefix_workload.PrefixWorkload())
    print(json.dumps({"window": "mix", **reuse(rows)}), flush=True)
    r = compare(rows, args.mix_speedup, 0.0, args.replicas)
    mean = ratio(r, CANDIDATE, "ttft_mean_ms")
    busiest = r[CANDIDATE]["max_over_mean"]
    assert isinstance(busiest, float)
    ok = mean <= 0.5 and busiest <= 1.25
    print(
        f"target 3 prefix mix, speed-up {args.mix_speedup:g}: mean {mean:.2f}x (<= 0.5), "
        f"busiest replica {busiest:.2f}x the mean (<= 1.25); oracle "
        f"{ratio(r, 'oracle', 'ttft_mean_ms'):.2f}x {verdict(ok)}",
        flush=True,
    )
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trace", default=str(default_trace()))
    ap.add_argument("--starts", default="0,3000,6000,9000")
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--speedups", default="1,1.25,1.5,1.75,2")
    ap.add_argument("--mix-speedup", type=float, default=2.0)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--only", choices=("1", "2", "3"), help="run one target")
    ap.add_argument(
        "--whole-trace",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after target 2's window 0, print it over every row too (reference only)",
    )
    args = ap.parse_args()
    checks = {"1": never_loses, "2": host_tier, "3": prefix_mix}
    passed = {k: f(args) for k, f in checks.items() if args.only in (None, k)}
    print("targets: " + ", ".join(f"{k} {verdict(v)}" for k, v in passed.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
