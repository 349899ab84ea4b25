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
size can beat. ``pooled`` (``Pooled``) is the best case within the replicas' own room: their
caches merged into one shared LRU pool, no block held twice; ``pooledBelady`` the same room
with Belady's eviction (it knows the future). ``--duplicate-every`` samples how
much of each strategy's aggregate cache holds blocks that two replicas both hold.
``--host-factor`` gives every replica the sim's host tier; ``--workload mix`` replays the
prefix-sharing mix (``prefix_workload.py``) instead of the trace. Each window's reuse (the
share an unbounded cache could serve, and how far back reuse reaches) is printed above its
rows.

  .venv/bin/python bench/routing/virtual.py                          # speedups 1..3, window 0
  .venv/bin/python bench/routing/virtual.py --starts 0,3000,6000,9000 --requests 1500
  .venv/bin/python bench/routing/virtual.py --speedups 1.5 --host-factor 4
  .venv/bin/python bench/routing/virtual.py --requests 0 --speedups 1.5 --host-factor 4  # all rows
  .venv/bin/python bench/routing/virtual.py --requests 0 --speedups 1.5 --host-factor 4 \
      --pickers leastInFlight,predictedTTFT,pooled --duplicate-every 100
  .venv/bin/python bench/routing/virtual.py --workload mix --speedups 1,2,3
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import statistics
import sys
from collections import Counter, OrderedDict, deque
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
from inferscale.sim.model import CPU, GPU, EngineParams, LatencyModel, Seq


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


class Pooled:
    """The best case within the same room: every replica's cache merged into one shared pool.

    One pool of ``replicas x`` (GPU cache + host tier) blocks, no block held twice, that every
    replica reads: the sim's two tiers (a GPU LRU list whose evictions move to a host LRU list;
    a host hit moves back to the GPU), pooled. A prompt's blocks enter (or refresh) the pool as
    it is placed, its first block most recently used, so a prefix outlives its tail. A GPU hit
    is free, as the oracle's; a host hit costs the sim's host transfer per token, charged as
    ``host_transfer / prefill`` seconds' worth of prefill tokens. Placement is ``leastPrefill``
    over the work left, as the oracle's. Like the oracle, cached blocks take no room from the
    running batch and a request's blocks are shared from the moment it is placed.

    So it bounds what any placement with this much room and LRU eviction can reach (no copy,
    perfect sharing); LRU is not Belady's optimal eviction, so it is not a bound on every
    eviction policy. It never hits more than the unbounded ``Oracle`` (it holds only blocks
    some earlier request computed), and by LRU's inclusion property never less than the same
    pool with less room.
    """

    def __init__(self, gpu_blocks: int, host_blocks: int, host_ratio: float) -> None:
        self.gpu: OrderedDict[int, None] = OrderedDict()  # least recently used first
        self.host: OrderedDict[int, None] = OrderedDict()
        self.gpu_blocks = gpu_blocks
        self.host_blocks = host_blocks
        self.host_ratio = host_ratio
        self.hits = 0
        self.host_hits = 0
        self.queries = 0

    @classmethod
    def of(cls, params: EngineParams, replicas: int) -> Pooled:
        """The pool of ``replicas`` engines with ``params``' caches."""
        bs = params.block_size
        return cls(
            replicas * (params.kv_capacity_tokens // bs),
            replicas * (params.host_kv_capacity_tokens // bs),
            params.host_transfer_seconds_per_token / params.prefill_seconds_per_token,
        )

    def match(self, hashes: tuple[int, ...]) -> tuple[int, int]:
        """The longest pooled prefix: (its blocks, those in the host tier)."""
        matched = on_host = 0
        for h in hashes:
            if h in self.host:
                on_host += 1
            elif h not in self.gpu:
                break
            matched += 1
        return matched, on_host

    def store(self, hashes: tuple[int, ...]) -> None:
        """Put (or refresh) the blocks on the GPU tier, the first most recently used."""
        for h in reversed(hashes):
            self.host.pop(h, None)
            self.gpu[h] = None
            self.gpu.move_to_end(h)
        while len(self.gpu) > self.gpu_blocks:
            evicted, _ = self.gpu.popitem(last=False)
            if self.host_blocks:
                self.host[evicted] = None
        while len(self.host) > self.host_blocks:
            self.host.popitem(last=False)

    def uncached(self, tokens: int, hashes: tuple[int, ...], block_size: int) -> int:
        """The prefill tokens to submit: uncached, plus host hits at their transfer price."""
        matched, on_host = self.match(hashes)
        self.store(hashes)
        cached = min(matched * block_size, tokens - 1)
        host = min(on_host * block_size, cached)
        self.hits += cached
        self.host_hits += host
        self.queries += tokens
        return tokens - cached + math.ceil(host * self.host_ratio)


class PooledBelady:
    """``Pooled``'s room, Belady's eviction: what the room allows if eviction knew the future.

    One pool of ``blocks`` (the replicas' GPU caches and host tiers together), that evicts
    the block whose next use is furthest ahead in the known future (``future``: every
    submitted prompt's blocks, in order), its later blocks first on a tie; a block never used
    again goes first, and an arriving block may be the one that goes (bypass). Which tier a
    block sits in is left open, so every hit is priced as the dearer one, a host-tier load
    (``host_ratio`` prefill tokens per token): this does not flatter it. Belady's MIN is the
    fewest misses for blocks of one size; with prefixes it is a close best case rather than a
    proof (a prefix's later block is never used before its first, so it goes no later).
    """

    def __init__(self, blocks: int, future: list[tuple[int, ...]], host_ratio: float) -> None:
        self.blocks = blocks
        self.host_ratio = host_ratio
        self.uses: dict[int, deque[int]] = {}
        for i, hashes in enumerate(future):
            for h in hashes:
                self.uses.setdefault(h, deque()).append(i)
        self.held: dict[int, int] = {}  # block: its next use
        self.heap: list[tuple[int, int, int]] = []  # (-next use, -position, block)
        self.now = 0
        self.hits = 0
        self.host_hits = 0
        self.queries = 0

    def uncached(self, tokens: int, hashes: tuple[int, ...], block_size: int) -> int:
        """The prefill tokens to submit, every hit at the host price; then the blocks are stored."""
        matched = 0
        for h in hashes:
            if h not in self.held:
                break
            matched += 1
        for pos, h in enumerate(hashes):
            uses = self.uses.get(h, deque())
            while uses and uses[0] <= self.now:
                uses.popleft()
            after = uses[0] if uses else math.inf
            nxt = int(min(after, sys.maxsize))
            self.held[h] = nxt
            heapq.heappush(self.heap, (-nxt, -pos, h))
        while len(self.held) > self.blocks:
            key, _, h = heapq.heappop(self.heap)
            if self.held.get(h) == -key:
                del self.held[h]
        self.now += 1
        cached = min(matched * block_size, tokens - 1)
        self.hits += cached
        self.host_hits += cached
        self.queries += tokens
        return tokens - cached + math.ceil(cached * self.host_ratio)


def live_blocks(future: list[tuple[int, ...]]) -> tuple[int, int, int, int]:
    """The most (and mean) blocks, over the prompts, that were used before and will be again:
    the room an eviction that knew the future needs to miss nothing an unbounded cache hits;
    then the distinct blocks, and how many of them are ever used again."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i, hashes in enumerate(future):
        for h in hashes:
            first.setdefault(h, i)
            last[h] = i
    delta = [0] * (len(future) + 1)
    reused = 0
    for h, i in first.items():
        if last[h] > i:
            reused += 1
            delta[i] += 1
            delta[last[h]] -= 1
    live = most = total = 0
    for d in delta[:-1]:
        live += d
        most = max(most, live)
        total += live
    return most, total // max(len(future), 1), len(first), reused


def duplicate_share(reps: list[Replica]) -> tuple[float, float, int]:
    """The copies in the replicas' caches (both tiers), now.

    Returns the share of the cached blocks (summed over replicas) that hold a block another
    replica also holds, the share that is a second or later copy (the room deduplication would
    free), and the number of cached blocks.
    """
    counts: Counter[int] = Counter()
    for r in reps:
        held = r.model.cached_blocks()
        counts.update(held[GPU] | held[CPU])
    total = sum(counts.values())
    shared = sum(n for n in counts.values() if n > 1)
    return (shared / total, (total - len(counts)) / total, total) if total else (0.0, 0.0, 0)


BEST_CASES = ("oracle", "pooled", "pooledBelady")
"""The rows that are bounds, not strategies: placed by ``leastPrefill``, pricing their own hits."""


def choose(
    picker: str, reps: list[Replica], ring: picking.HashRing, text: str, i: int, load_bound: float
) -> Replica:
    """The classic pickers, as the router runs them (``predictedTTFT`` and oracle apart)."""
    if picker.startswith("prefixHash"):
        pick_hash = kubeai_prefix_hash if picker == "prefixHashKubeAI" else picking.prefix_hash
        return pick_hash(reps, ring, picking.hash64(text), load_bound)
    if picker in BEST_CASES:
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
    duplicate_every: int = 0,
) -> dict[str, object]:
    """One picker (or best case) over the rows; ``duplicate_every`` > 0 samples the copies
    (``duplicate_share``) every that many rows once the caches are full."""
    events = picker.startswith("predictedTTFT")
    reps = [
        Replica(f"10.0.0.{i}:8000", LatencyModel(params, record_events=events))
        for i in range(replicas)
    ]
    kv = KvRouter(params, **ABLATIONS.get(picker, {})) if events else None
    future = submitted_blocks(rows, prompts, params, max_tokens) if picker == "pooledBelady" else []
    best = best_case(picker, params, replicas, future)
    room = replicas * (params.kv_capacity_tokens + params.host_kv_capacity_tokens)
    room //= params.block_size
    duplicates: list[tuple[float, float]] = []
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
        if best is not None:
            seq = chosen.model.submit(now, best.uncached(tokens, hashes, params.block_size), out)
        else:
            seq = chosen.model.submit(now, tokens, out, hashes)
        if kv is not None and est is not None:
            kv.sent(chosen, seq, est, hashes)
        seqs.append(seq)
        served[reps.index(chosen)] += 1
        if best is None and duplicate_every and i % duplicate_every == 0:
            sample_duplicates(reps, room, duplicates)
    for r in reps:
        r.model.advance(math.inf)
    result = summary(picker, rows, reps, seqs, served, load_sum)
    if best is not None:  # its hits never reach an engine
        result["prefix_hit_rate"] = round(best.hits / max(best.queries, 1), 3)
        host = getattr(best, "host_hits", 0)
        result["host_hit_rate"] = round(host / max(best.queries, 1), 3)
    if future:
        live = dict(zip(("max", "mean", "distinct", "reused"), live_blocks(future), strict=True))
        result["live_blocks"] = live
    if duplicates:
        result["held_twice"] = round(statistics.mean(d[0] for d in duplicates), 3)
        result["copies"] = round(statistics.mean(d[1] for d in duplicates), 3)
        result["duplicate_samples"] = len(duplicates)
    return result


def best_case(
    picker: str, params: EngineParams, replicas: int, future: list[tuple[int, ...]]
) -> Oracle | Pooled | PooledBelady | None:
    """The bound a best-case row replays, or None for a strategy; ``future``: every prompt's
    blocks, in the order they are submitted (only ``pooledBelady`` reads it)."""
    if picker == "oracle":
        return Oracle()
    if picker == "pooled":
        return Pooled.of(params, replicas)
    if picker == "pooledBelady":
        room = params.kv_capacity_tokens + params.host_kv_capacity_tokens
        ratio = params.host_transfer_seconds_per_token / params.prefill_seconds_per_token
        return PooledBelady(replicas * room // params.block_size, future, ratio)
    return None


def submitted_blocks(
    rows: list[Row], prompts: Prompts, params: EngineParams, max_tokens: int
) -> list[tuple[int, ...]]:
    """The blocks of every prompt ``run`` submits, in order (the future Belady is told)."""
    per_block = prompts.block_words // params.block_size
    return [
        hashes_of(row, per_block)
        for row in rows
        if prompts.tokens(row) + output_tokens(row, max_tokens) <= params.max_model_len
    ]


def sample_duplicates(reps: list[Replica], room: int, out: list[tuple[float, float]]) -> None:
    """Record ``duplicate_share`` once the replicas' caches are full (90 % of ``room`` blocks)."""
    held_twice, copies, total = duplicate_share(reps)
    if total >= 0.9 * room:
        out.append((held_twice, copies))


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
            duplicate_every=args.duplicate_every,
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
    ap.add_argument(
        "--duplicate-every",
        type=int,
        default=0,
        help="sample the blocks two replicas both cache every that many rows (0: never)",
    )
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
                for keys in (
                    ("picker", "held_twice", "copies", "duplicate_samples"),
                    ("picker", "live_blocks"),
                ):
                    if keys[1] in r:
                        print(json.dumps({k: r[k] for k in keys}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
