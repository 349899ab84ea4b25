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
``predictedTTFT`` runs the router's own glue (``inferscale.router.ttft.TtftRouting``, with
the router's priors, called as the pick and forward stages call it): it learns each replica's
cache only from the KV events its model records (what vLLM publishes) and the pool's prefill
rate and host-tier load cost only from the first tokens it sees. ``predictedTTFT-greedy``,
``-noInFlight`` and ``-greedy-noInFlight`` are the same with a rule off (``ABLATIONS``).
Every table ends with the perfect-cache oracle (``Oracle``): the bound no placement or cache
size can beat. ``--host-factor`` gives every replica the sim's host tier; ``--workload mix``
replays the prefix-sharing mix (``prefix_workload.py``) instead of the trace. Each window's
reuse (the share an unbounded cache could serve, and how far back reuse reaches) is printed
above its rows.

  .venv/bin/python bench/routing/virtual.py                          # speedups 1..3, window 0
  .venv/bin/python bench/routing/virtual.py --starts 0,3000,6000,9000 --requests 1500
  .venv/bin/python bench/routing/virtual.py --speedups 1.5 --host-factor 4
  .venv/bin/python bench/routing/virtual.py --requests 0 --speedups 1.5 --host-factor 4  # all rows
  .venv/bin/python bench/routing/virtual.py --workload mix --speedups 1,2,3
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

import prefix_workload
from workload import (
    Prompts,
    Row,
    add_workload_arguments,
    default_trace,
    engine_params,
    output_tokens,
    read_rows,
    reuse,
)

from inferscale.router import picking, ttft
from inferscale.sim.model import EngineParams, LatencyModel, Seq


@dataclass(slots=True, eq=False)
class Replica:
    """A picker candidate over one latency model."""

    key: str
    model: LatencyModel
    weight: int = 1
    queued: int = 0
    kv_usage: float = 0.0
    pending_prefill_tokens: int = 0
    """predictedTTFT's own count: uncached prompt tokens sent there that have no first token."""

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


class GreedyRouting(ttft.TtftRouting):
    """The ablation that sees no arrivals, so a pick costs its own predicted TTFT alone."""

    __slots__ = ()

    def arrivals_per_second(self, pool: str, now: float) -> float:
        return 0.0


POOL = "bench"
"""The one model the bench serves: ``TtftRouting``'s rate pool."""


@dataclass(slots=True)
class Sent:
    """A request ``predictedTTFT`` placed, as the router's pick stage tracks it."""

    replica: Replica
    estimate: ttft.Estimate
    hashes: tuple[int, ...]
    prefilled: bool = False


class KvRouter:
    """The router's ``predictedTTFT`` glue (``ttft.TtftRouting``) over virtual replicas.

    The same object and calls as the router's pick and forward stages: ``pick``, then ``sent``;
    at the first token the prompt leaves the replica's pending prefill and the TTFT teaches the
    pool's rate (``observe``); at the end ``finished``. The cache index learns only from the
    replicas' KV events (``index.apply``, what the router's subscriber calls per batch).
    ``in_flight_blocks=False`` is the ablation without the blocks of requests in flight,
    ``delay_cost=False`` the one that scores by the request's own TTFT alone.
    """

    def __init__(
        self, params: EngineParams, *, in_flight_blocks: bool = True, delay_cost: bool = True
    ) -> None:
        routing = ttft.TtftRouting if delay_cost else GreedyRouting
        # The router's own priors (``RouterState`` makes ``TtftRouting()``): the prefill rate
        # and the host ratio are learned from first tokens, never told the engine's figures.
        self.routing = routing(block_size=params.block_size)
        self.in_flight_blocks = in_flight_blocks
        self.waiting: dict[int, Sent] = {}

    def sync(self, rep: Replica, touched: list[Seq]) -> None:
        self.routing.index.apply(rep.key, rep.model.take_events())
        for seq in touched:
            sent = self.waiting.get(id(seq))
            if sent is None:
                continue
            if not sent.prefilled and (seq.first_token_at is not None or seq.done):
                sent.prefilled = True
                rep.pending_prefill_tokens -= sent.estimate.own_tokens
                if seq.ttft is not None:
                    est = sent.estimate
                    self.routing.observe(POOL, est.work_tokens, seq.ttft, est.host_tokens)
            if seq.done:
                del self.waiting[id(seq)]
                self.routing.finished(rep.key, sent.hashes)

    def pick(
        self, reps: list[Replica], tokens: int, hashes: tuple[int, ...], i: int, now: float
    ) -> tuple[Replica, ttft.Estimate]:
        return self.routing.pick(reps, hashes, tokens, i, POOL, now)

    def sent(self, rep: Replica, seq: Seq, est: ttft.Estimate, hashes: tuple[int, ...]) -> None:
        rep.pending_prefill_tokens += est.own_tokens
        blocks = hashes if self.in_flight_blocks else ()
        self.routing.sent(rep.key, blocks)
        self.waiting[id(seq)] = Sent(rep, est, blocks)


class Oracle:
    """The perfect-cache bound: every prefix any earlier request computed is cached everywhere.

    Unbounded, free to load and placed on every replica at once, so placement only balances
    load (``leastPrefill`` over the work left). Cached blocks take no KV room either, so it is
    a bound no real cache reaches, not a strategy.
    """

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.hits = 0
        self.queries = 0

    def uncached(self, tokens: int, hashes: tuple[int, ...], block_size: int) -> int:
        hit = 0
        for h in hashes:
            if h not in self.seen:
                break
            hit += 1
        self.seen.update(hashes)
        cached = min(hit * block_size, tokens - 1)
        self.hits += cached
        self.queries += tokens
        return tokens - cached


def choose(
    picker: str, reps: list[Replica], ring: picking.HashRing, text: str, i: int, load_bound: float
) -> Replica:
    """The classic pickers, as the router runs them (``predictedTTFT`` and oracle apart)."""
    if picker.startswith("prefixHash"):
        pick_hash = kubeai_prefix_hash if picker == "prefixHashKubeAI" else picking.prefix_hash
        return pick_hash(reps, ring, picking.hash64(text), load_bound)
    if picker == "oracle":
        return picking.least_prefill(reps, i + 1)
    return picking.pick(picker, reps, counter=i + 1)  # type: ignore[arg-type]


ABLATIONS: dict[str, dict[str, bool]] = {
    "predictedTTFT-noInFlight": {"in_flight_blocks": False},
    "predictedTTFT-greedy": {"delay_cost": False},
    "predictedTTFT-greedy-noInFlight": {"delay_cost": False, "in_flight_blocks": False},
}
"""``predictedTTFT`` with one rule off (``KvRouter``'s flags), to show what each rule is worth."""


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
    events = picker.startswith("predictedTTFT")
    reps = [
        Replica(f"10.0.0.{i}:8000", LatencyModel(params, record_events=events))
        for i in range(replicas)
    ]
    kv = KvRouter(params, **ABLATIONS.get(picker, {})) if events else None
    oracle = Oracle() if picker == "oracle" else None
    ring = picking.HashRing([r.key for r in reps], ring_points)
    per_block = prompts.block_words // params.block_size
    chars = prompts.prefix_chars(prefix_blocks)
    t0 = rows[0].at_s
    seqs: list[Seq | None] = []
    served = [0] * replicas
    load_sum = [0] * replicas
    for i, row in enumerate(rows):
        now = (row.at_s - t0) / speedup
        for j, r in enumerate(reps):
            touched = r.model.advance(now)
            if kv is not None:
                kv.sync(r, touched)
            load_sum[j] += r.in_flight
        tokens = prompts.tokens(row)
        out = output_tokens(row, max_tokens)
        if tokens + out > params.max_model_len:
            seqs.append(None)
            continue
        hashes = hashes_of(row, per_block)
        est = None
        if kv is not None:
            chosen, est = kv.pick(reps, tokens, hashes, i + 1, now)
        else:
            hashed = picker.startswith("prefixHash")
            text = picking.prefix_text({"prompt": prompts.text(row)}, chars) if hashed else ""
            chosen = choose(picker, reps, ring, text, i, load_bound)
        if oracle is not None:
            seq = chosen.model.submit(now, oracle.uncached(tokens, hashes, params.block_size), out)
        else:
            seq = chosen.model.submit(now, tokens, out, hashes)
        if kv is not None and est is not None:
            kv.sent(chosen, seq, est, hashes)
        seqs.append(seq)
        served[reps.index(chosen)] += 1
    for r in reps:
        r.model.advance(math.inf)
    result = summary(picker, rows, reps, seqs, served, load_sum)
    if oracle is not None:  # its hits never reach an engine
        result["prefix_hit_rate"] = round(oracle.hits / max(oracle.queries, 1), 3)
    return result


def summary(
    picker: str,
    rows: list[Row],
    reps: list[Replica],
    seqs: list[Seq | None],
    served: list[int],
    load_sum: list[int],
) -> dict[str, object]:
    ttfts = sorted(s.ttft for s in seqs if s is not None and s.ttft is not None)
    hits = sum(r.model.stats.prefix_cache_hits for r in reps)
    host_hits = sum(r.model.stats.host_cache_hits for r in reps)
    queries = sum(r.model.stats.prefix_cache_queries for r in reps)
    mean_served = statistics.mean(served)
    mean_load = statistics.mean(load_sum)
    return {
        "picker": picker,
        "ok": len(ttfts),
        "requests": len(rows),
        "ttft_mean_ms": round(1000 * statistics.mean(ttfts), 1),
        "ttft_p95_ms": round(1000 * ttfts[int(0.95 * (len(ttfts) - 1))], 1),
        # GPU and host-tier hits together (the oracle's are not counted by the engine).
        "prefix_hit_rate": round((hits + host_hits) / queries, 3) if queries else None,
        "host_hit_rate": round(host_hits / queries, 3) if queries else None,
        "per_replica": served,
        "max_over_mean": round(max(served) / mean_served, 2),
        # In flight seen by arriving requests, averaged per replica: the load CHWBL bounds.
        "in_flight_max_over_mean": round(max(load_sum) / mean_load, 2) if mean_load else None,
        "mean_in_flight": round(mean_load / len(rows), 1),
    }


def windows(args: argparse.Namespace) -> list[tuple[str, list[Row]]]:
    """The rows to replay: trace windows, or the prefix-sharing mix (``--workload``)."""
    if args.workload == "mix":
        return [("mix", prefix_workload.rows(prefix_workload.from_arguments(args)))]
    return [
        (str(start), read_rows(args.trace, start, args.requests))
        for start in (int(s) for s in args.starts.split(","))
    ]


def sweep(
    args: argparse.Namespace,
    prompts: Prompts,
    params: EngineParams,
    rows: list[Row],
    speedup: float,
) -> list[dict[str, object]]:
    """Every picker (and the oracle, always last) over the same rows at one load."""
    pickers = [p for p in args.pickers.split(",") if p != "oracle"] + ["oracle"]
    return [
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
        for p in pickers
    ]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trace", default=str(default_trace()))
    ap.add_argument("--workload", choices=("trace", "mix"), default="trace")
    ap.add_argument("--starts", default="0", help="first trace rows, comma-separated")
    ap.add_argument(
        "--requests", type=int, default=900, help="rows per window (0: to the trace's end)"
    )
    ap.add_argument("--speedups", default="1,1.5,2,2.5,3")
    add_workload_arguments(ap)
    prefix_workload.add_arguments(ap)
    ap.add_argument("--ring-points", type=int, default=64, help="prefixHash points per endpoint")
    ap.add_argument("--pickers", default="leastInFlight,prefixHash,predictedTTFT")
    args = ap.parse_args()
    prompts = Prompts(args.block_words)
    params = engine_params(args.preset, prompts.scale, args.kv_factor, args.host_factor)
    print(json.dumps({**vars(args), "engine": params.model_dump()}), flush=True)
    print(
        "\n| start | speedup | picker | ok | mean TTFT ms | p95 TTFT ms | hit rate (host)"
        " | requests max/mean | in-flight max/mean | mean in flight | ratio | p95 ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, rows in windows(args):
        print(json.dumps({"window": name, **reuse(rows)}), flush=True)
        for speedup in (float(s) for s in args.speedups.split(",")):
            results = sweep(args, prompts, params, rows, speedup)
            base, base95 = results[0]["ttft_mean_ms"], results[0]["ttft_p95_ms"]
            for r in results:
                ratio = r["ttft_mean_ms"] / base  # type: ignore[operator]
                ratio95 = r["ttft_p95_ms"] / base95  # type: ignore[operator]
                print(
                    f"| {name} | {speedup:g} | {r['picker']} | {r['ok']}/{r['requests']} "
                    f"| {r['ttft_mean_ms']} | {r['ttft_p95_ms']} | {r['prefix_hit_rate']} "
                    f"({r['host_hit_rate']}) | {r['max_over_mean']} "
                    f"| {r['in_flight_max_over_mean']} | {r['mean_in_flight']} | {ratio:.2f} "
                    f"| {ratio95:.2f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
