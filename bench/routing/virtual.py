#!/usr/bin/env python3
"""The routing benchmark in virtual time: the sims' latency model and the router's pickers.

Same workload as ``run_bench.py`` (``workload.py``), same engine model
(``inferscale.sim.model.LatencyModel``, which every ``inferscale sim`` runs), same pickers
(``inferscale.router.picking``) over the same prompt prefixes, but no HTTP and no clock:
time jumps from arrival to arrival, so a sweep over loads and trace windows at full token
scale takes seconds instead of hours. It is the cross-check of the real-time benchmark, not
a replacement: the router's own latency, the HTTP path and the real clocks are left out.

Each picker sees what the router sees: in flight = requests sent to the endpoint and not yet
finished (the engine's running plus waiting), nothing scraped. ``prefixHashKubeAI`` is
KubeAI's variant of the bound (``kubeai_prefix_hash``), to compare with ours.

  .venv/bin/python bench/routing/virtual.py                          # speedups 1..3, window 0
  .venv/bin/python bench/routing/virtual.py --starts 0,3000,6000,9000 --requests 1500
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import (
    Prompts,
    Row,
    add_workload_arguments,
    default_trace,
    engine_params,
    output_tokens,
    read_rows,
)

from inferscale.router import picking
from inferscale.sim.model import EngineParams, LatencyModel, Seq


@dataclass(slots=True, eq=False)
class Replica:
    """A picker candidate over one latency model."""

    key: str
    model: LatencyModel
    weight: int = 1
    queued: int = 0
    kv_usage: float = 0.0

    @property
    def in_flight(self) -> int:
        return self.model.num_running + self.model.num_waiting

    @property
    def pending_prompt_tokens(self) -> int:
        return self.model.pending_prompt_tokens


def kubeai_prefix_hash(
    candidates: list[Replica], ring: picking.HashRing, h: int, load_bound: float
) -> Replica:
    """KubeAI's CHWBL (internal/loadbalancer/balance_chwbl.go), for comparison only.

    Its bound is ``in_flight + 1 <= load_bound * (total + 1) / n`` without rounding up, and when
    no endpoint passes (at low load none can) the first endpoint on the ring gets the request.
    """
    by_key = {c.key: c for c in candidates}
    walk = [by_key[k] for k in ring.walk(h) if k in by_key]
    total = sum(c.in_flight for c in candidates)
    if total == 0:
        return walk[0]
    threshold = load_bound * (total + 1) / len(candidates)
    return next((c for c in walk if c.in_flight + 1 <= threshold), walk[0])


def hashes_of(row: Row, per_block: int) -> tuple[int, ...]:
    # Mooncake's ids already name a whole prefix, so (id, position) needs no chaining.
    return tuple(b * 1_000_003 + j for b in row.hash_ids for j in range(per_block))


def run(
    picker: str,
    rows: list[Row],
    prompts: Prompts,
    params: EngineParams,
    *,
    replicas: int,
    speedup: float,
    prefix_blocks: int,
    max_tokens: int,
    load_bound: float,
    ring_points: int,
) -> dict[str, object]:
    reps = [Replica(f"10.0.0.{i}:8000", LatencyModel(params)) for i in range(replicas)]
    ring = picking.HashRing([r.key for r in reps], ring_points)
    per_block = prompts.block_words // params.block_size
    chars = prompts.prefix_chars(prefix_blocks)
    t0 = rows[0].at_s
    seqs: list[Seq | None] = []
    served = [0] * replicas
    load_sum = [0] * replicas
    for i, row in enumerate(rows):
        now = (row.at_s - t0) / speedup
        for r in reps:
            r.model.advance(now)
        for j, r in enumerate(reps):
            load_sum[j] += r.in_flight
        if picker.startswith("prefixHash"):
            text = picking.prefix_text({"prompt": prompts.text(row)}, chars)
            pick_hash = kubeai_prefix_hash if picker == "prefixHashKubeAI" else picking.prefix_hash
            chosen = pick_hash(reps, ring, picking.hash64(text), load_bound)
        else:
            chosen = picking.pick(picker, reps, counter=i + 1)  # type: ignore[arg-type]
        tokens = prompts.tokens(row)
        out = output_tokens(row, max_tokens)
        if tokens + out > params.max_model_len:
            seqs.append(None)
            continue
        seqs.append(chosen.model.submit(now, tokens, out, hashes_of(row, per_block)))
        served[reps.index(chosen)] += 1
    for r in reps:
        r.model.advance(math.inf)
    ttfts = sorted(s.ttft for s in seqs if s is not None and s.ttft is not None)
    hits = sum(r.model.stats.prefix_cache_hits for r in reps)
    queries = sum(r.model.stats.prefix_cache_queries for r in reps)
    mean_served = statistics.mean(served)
    mean_load = statistics.mean(load_sum)
    return {
        "picker": picker,
        "ok": len(ttfts),
        "requests": len(rows),
        "ttft_mean_ms": round(1000 * statistics.mean(ttfts), 1),
        "ttft_p95_ms": round(1000 * ttfts[int(0.95 * (len(ttfts) - 1))], 1),
        "prefix_hit_rate": round(hits / queries, 3) if queries else None,
        "per_replica": served,
        "max_over_mean": round(max(served) / mean_served, 2),
        # In flight seen by arriving requests, averaged per replica: the load CHWBL bounds.
        "in_flight_max_over_mean": round(max(load_sum) / mean_load, 2) if mean_load else None,
        "mean_in_flight": round(mean_load / len(rows), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trace", default=str(default_trace()))
    ap.add_argument("--starts", default="0", help="first trace rows, comma-separated")
    ap.add_argument("--requests", type=int, default=900)
    ap.add_argument("--speedups", default="1,1.5,2,2.5,3")
    add_workload_arguments(ap)
    ap.add_argument("--ring-points", type=int, default=64, help="prefixHash points per endpoint")
    ap.add_argument("--pickers", default="leastInFlight,prefixHash")
    args = ap.parse_args()
    prompts = Prompts(args.block_words)
    params = engine_params(args.preset, prompts.scale, args.kv_factor)
    print(json.dumps({**vars(args), "engine": params.model_dump()}), flush=True)
    print(
        "\n| start | speedup | picker | ok | mean TTFT ms | p95 TTFT ms | hit rate"
        " | requests max/mean | in-flight max/mean | mean in flight | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for start in (int(s) for s in args.starts.split(",")):
        rows = read_rows(args.trace, start, args.requests)
        for speedup in (float(s) for s in args.speedups.split(",")):
            results = [
                run(
                    p,
                    rows,
                    prompts,
                    params,
                    replicas=args.replicas,
                    speedup=speedup,
                    prefix_blocks=args.prefix_blocks,
                    max_tokens=args.max_tokens,
                    load_bound=args.load_bound,
                    ring_points=args.ring_points,
                )
                for p in args.pickers.split(",")
            ]
            base = results[0]["ttft_mean_ms"]
            for r in results:
                ratio = r["ttft_mean_ms"] / base  # type: ignore[operator]
                print(
                    f"| {start} | {speedup:g} | {r['picker']} | {r['ok']}/{r['requests']} "
                    f"| {r['ttft_mean_ms']} | {r['ttft_p95_ms']} | {r['prefix_hit_rate']} "
                    f"| {r['max_over_mean']} | {r['in_flight_max_over_mean']} "
                    f"| {r['mean_in_flight']} | {ratio:.2f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
