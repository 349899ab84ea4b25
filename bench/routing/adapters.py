#!/usr/bin/env python3
"""Many LoRA adapters on a few replicas, in virtual time: adapter-affine routing against the rest.

Issue 25's benchmark: 20 adapters on 4 replicas with ``max_loras`` 4, the adapters' traffic
Zipf-distributed, Poisson arrivals. Every replica has every adapter loaded (as the operator
leaves them), so what differs is how many distinct adapters each replica's GPU slots must
juggle. The engine is the sims' latency model (``inferscale.sim.model.LatencyModel``, the
``llama-3.1-8b-h100`` preset) with ``max_loras`` slots and a swap cost per adapter brought into
a slot; the pickers are the router's own (``inferscale.router.picking``): ``leastInFlight``
over all replicas; ``adapterHash``, bounded-load consistent hashing on the adapter's name alone;
and ``adapterAffinity``, what the router does for an adapter's name under its default strategy
(among replicas within 1.25x the mean of its decayed counts of adapter requests and under a
loose cap on requests in flight, the one with the smallest count that it recently sent the
adapter to, else the one with the smallest count whose next eviction leaves a copy elsewhere).
No HTTP, no clock: time jumps from arrival to arrival. Seeded, so a run repeats exactly.

  .venv/bin/python bench/routing/adapters.py                        # ~10 s
  .venv/bin/python bench/routing/adapters.py --rates 10,20,30 --zipf 0.8,1.1 --seeds 1,2,3

Prints one Markdown row per (rate, zipf, seed, picker): adapter swaps, mean and p95 TTFT, the
busiest replica's requests over the mean, the last quarter's mean TTFT over the first
quarter's (:func:`ttft_growth`: well above 1 when queues grow without bound), and the ratios
against ``leastInFlight``; first a ``bestCase`` row, the fewest swaps any router could have for
the same arrivals (:func:`fewest_swaps`), so a picker's cut reads against what is possible; and
last a ``swapFree`` row, ``leastInFlight`` with every request on one adapter: what the fleet
serves when nothing swaps, so a rate past the fleet's capacity shows as such.
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
import statistics
import sys
from dataclasses import dataclass, field

from virtual import Replica

from inferscale.router import picking
from inferscale.sim.model import EngineParams, LatencyModel, Seq
from inferscale.sim.presets import preset


@dataclass(slots=True, eq=False)
class AdapterReplica(Replica):
    """virtual.py's replica, plus what the adapter rules read: loaded and recent adapters."""

    adapters: frozenset[str] = frozenset()
    recent_adapters: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Request:
    at: float
    adapter: str
    prompt: int
    output: int


def workload(
    n: int, rate: float, adapters: int, zipf: float, seed: int, prompt: int, output: int
) -> list[Request]:
    """``n`` Poisson arrivals at ``rate``/s; adapter i+1 is chosen with weight 1/(i+1)^zipf."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) ** zipf for i in range(adapters)]
    cumulative = [sum(weights[: i + 1]) for i in range(adapters)]
    out, now = [], 0.0
    for _ in range(n):
        now += rng.expovariate(rate)
        i = bisect.bisect_left(cumulative, rng.random() * cumulative[-1])
        # Prompts and outputs vary by up to half either way around their means.
        p = max(1, round(prompt * rng.uniform(0.5, 1.5)))
        o = max(1, round(output * rng.uniform(0.5, 1.5)))
        out.append(Request(now, f"lora-{min(i, adapters - 1)}", p, o))
    return out


def fewest_swaps(adapters: list[str], slots: int) -> int:
    """Belady's optimal eviction over all replicas' slots pooled into one cache of ``slots``.

    The fewest swaps of any router and any engine eviction for these arrivals, taken in
    arrival order (the sim counts the first load into an empty slot as a swap, and so does
    this): the adapters in some replica's slot form a set of at most ``slots`` that gains an
    adapter only when a request for it finds it in no slot, every such request swaps, and no
    cache of ``slots`` misses less often than Belady's (evict the adapter needed again
    furthest in the future). It ignores load balance and running requests pinning their
    slots, which only add swaps; engine queues admit requests a little out of arrival order,
    so it is a near-bound rather than a proof for the sim.
    """
    next_use = [math.inf] * len(adapters)
    seen: dict[str, int] = {}
    for i in range(len(adapters) - 1, -1, -1):
        next_use[i] = seen.get(adapters[i], math.inf)
        seen[adapters[i]] = i
    cache: dict[str, float] = {}  # adapter -> when it is next needed
    misses = 0
    for i, adapter in enumerate(adapters):
        if adapter not in cache:
            misses += 1
            if len(cache) >= slots:
                del cache[max(cache, key=lambda name: cache[name])]
        cache[adapter] = next_use[i]
    return misses


def run(
    picker: str, requests: list[Request], params: EngineParams, replicas: int, load_bound: float
) -> dict[str, float | int | str]:
    if picker == "swapFree":
        # The fleet's capacity without swaps: the same arrivals, all on one adapter.
        requests = [Request(r.at, "lora-0", r.prompt, r.output) for r in requests]
    names = frozenset(r.adapter for r in requests)
    reps = [
        AdapterReplica(f"10.0.0.{i}:8000", LatencyModel(params), adapters=names)
        for i in range(replicas)
    ]
    ring = picking.HashRing([r.key for r in reps])
    shares = picking.AdapterShares()
    seqs: list[Seq] = []
    served = [0] * replicas
    for i, req in enumerate(requests):
        for r in reps:
            r.model.advance(req.at)
        candidates = picking.holding_adapter(reps, req.adapter)
        if picker == "adapterAffinity":
            chosen = picking.adapter_affinity(
                candidates, ring, req.adapter, shares, load_bound, i + 1
            )
            shares.note(chosen.key)
            picking.remember_adapter(chosen.recent_adapters, req.adapter, params.max_loras)
        elif picker == "adapterHash":
            h = picking.hash64(f"lora:{req.adapter}")
            chosen = picking.prefix_hash(candidates, ring, h, load_bound)
        else:  # leastInFlight, and swapFree's picker
            chosen = picking.least_in_flight(candidates, i + 1)
        seqs.append(chosen.model.submit(req.at, req.prompt, req.output, adapter=req.adapter))
        served[reps.index(chosen)] += 1
    for r in reps:
        r.model.advance(math.inf)
    in_order = [s.ttft for s in seqs if s.ttft is not None]
    ttfts = sorted(in_order)
    return {
        "picker": picker,
        "swaps": sum(r.model.stats.adapter_swaps for r in reps),
        "ttft_mean_ms": 1000 * statistics.mean(ttfts),
        "ttft_p95_ms": 1000 * ttfts[int(0.95 * (len(ttfts) - 1))],
        "max_over_mean": max(served) / statistics.mean(served),
        "ttft_growth": ttft_growth(in_order),
    }


def ttft_growth(ttfts_in_arrival_order: list[float]) -> float:
    """Mean TTFT of the last quarter of arrivals over the first quarter's.

    About 1 while the fleet keeps up; well above 1 when its queues grow without bound (the
    rate is past what the fleet serves under that picker).
    """
    quarter = len(ttfts_in_arrival_order) // 4
    if quarter == 0:
        return 1.0
    first = statistics.mean(ttfts_in_arrival_order[:quarter])
    last = statistics.mean(ttfts_in_arrival_order[-quarter:])
    return last / first if first > 0 else 1.0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--rates", default="10,20,30", help="arrivals per second, comma-separated")
    ap.add_argument("--zipf", default="1.1", help="Zipf exponents, comma-separated")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--adapters", type=int, default=20)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--max-loras", type=int, default=4)
    ap.add_argument("--swap-ms", type=float, default=20.0, help="cost of one adapter swap")
    ap.add_argument("--prompt", type=int, default=1000, help="mean prompt tokens")
    ap.add_argument("--output", type=int, default=200, help="mean output tokens")
    ap.add_argument("--load-bound", type=float, default=picking.DEFAULT_LOAD_BOUND)
    ap.add_argument("--preset", default="llama-3.1-8b-h100")
    args = ap.parse_args()
    params = preset(args.preset).model_copy(
        update={
            "max_loras": args.max_loras,
            "lora_swap_seconds": args.swap_ms / 1000,
            "startup_delay_seconds": 0.0,
        }
    )
    print(
        "| rate/s | zipf | seed | picker | swaps | mean TTFT ms | p95 TTFT ms"
        " | requests max/mean | TTFT last/first quarter | swaps vs leastInFlight"
        " | mean TTFT vs leastInFlight |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for rate in (float(r) for r in args.rates.split(",")):
        for zipf in (float(z) for z in args.zipf.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                requests = workload(
                    args.requests, rate, args.adapters, zipf, seed, args.prompt, args.output
                )
                base, *others = (
                    run(p, requests, params, args.replicas, args.load_bound)
                    for p in ("leastInFlight", "adapterHash", "adapterAffinity", "swapFree")
                )
                best = fewest_swaps([r.adapter for r in requests], args.replicas * args.max_loras)
                print(
                    f"| {rate:g} | {zipf:g} | {seed} | bestCase (bound) | {best} | – | – | – | – "
                    f"| {float(base['swaps']) / max(best, 1):.1f}x fewer | – |",
                    flush=True,
                )
                for r in (base, *others):
                    swaps = float(base["swaps"]) / max(float(r["swaps"]), 1)
                    ttft = float(r["ttft_mean_ms"]) / float(base["ttft_mean_ms"])
                    print(
                        f"| {rate:g} | {zipf:g} | {seed} | {r['picker']} | {r['swaps']} "
                        f"| {float(r['ttft_mean_ms']):.1f} | {float(r['ttft_p95_ms']):.1f} "
                        f"| {float(r['max_over_mean']):.2f} | {float(r['ttft_growth']):.2f} "
                        f"| {swaps:.1f}x fewer "
                        f"| {ttft:.2f} |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
