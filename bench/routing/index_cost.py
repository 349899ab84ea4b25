#!/usr/bin/env python3
"""What predictedTTFT's cache index costs the router: memory, event ingestion, and each pick.

1. Replays a window of the conversation trace through 4 virtual replicas (``virtual.py``'s
   ``predictedTTFT`` run, events on) and counts the KV events they publish per second of
   trace time: the feed a router subscribed to 4 busy replicas must keep up with.
2. Encodes those events as the sim publishes them (``protocol.kvevents``) and times the
   subscriber's ``apply`` (decode + index update) over all of them: the share of one CPU core
   the feed takes.
3. Times ``predicted_ttft`` over the same prompts against the filled index: the cost each
   request adds to the pick stage.
4. Measures the index's memory per block (tracemalloc).

  .venv/bin/python bench/routing/index_cost.py --requests 600 --speedup 1.5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import virtual
from workload import Prompts, default_trace, engine_params, read_rows

from inferscale.protocol.kvevents import encode_batch
from inferscale.router import ttft
from inferscale.router.kvsubscribe import StreamStats, apply
from inferscale.sim.model import KvEvent, LatencyModel


def recorded_feed(rows: list[virtual.Row], speedup: float, replicas: int) -> list[list[KvEvent]]:
    """Per advance of each replica, the batch of events it would publish (predictedTTFT run)."""
    batches: list[list[KvEvent]] = []
    original = LatencyModel.take_events

    def spy(self: LatencyModel) -> list[KvEvent]:
        out = original(self)
        if out:
            batches.append(out)
        return out

    LatencyModel.take_events = spy  # type: ignore[method-assign]
    try:
        prompts = Prompts(512)
        params = engine_params("llama-3.1-8b-h100", prompts.scale)
        virtual.run(
            "predictedTTFT",
            rows,
            prompts,
            params,
            replicas=replicas,
            speedup=speedup,
            prefix_blocks=2,
            max_tokens=0,
            load_bound=1.25,
            ring_points=64,
        )
    finally:
        LatencyModel.take_events = original  # type: ignore[method-assign]
    return batches


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trace", default=str(default_trace()))
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--speedup", type=float, default=1.5)
    ap.add_argument("--replicas", type=int, default=4)
    args = ap.parse_args()
    rows = read_rows(args.trace, 0, args.requests)
    span = (rows[-1].at_s - rows[0].at_s) / args.speedup
    batches = recorded_feed(rows, args.speedup, args.replicas)
    payloads = [encode_batch(0.0, b, 16) for b in batches]
    blocks = sum(len(e.hashes) for b in batches for e in b)
    index = ttft.CacheIndex()
    stats = StreamStats()
    start = time.perf_counter()
    for seq, payload in enumerate(payloads):
        apply(index, "r0", stats, seq, payload)
    ingest = time.perf_counter() - start
    # Picks against a full index: every replica holds what replica 0's stream said.
    for key in ("r1", "r2", "r3"):
        for seq, payload in enumerate(payloads[: len(payloads) // 2]):
            apply(index, key, StreamStats(), seq, payload)
    hashes = [virtual.hashes_of(r, 32) for r in rows]
    cands = [virtual.Replica(k, LatencyModel(engine_params("zero", 1.0))) for k in ("r0", "r1")]
    cands += [virtual.Replica(k, LatencyModel(engine_params("zero", 1.0))) for k in ("r2", "r3")]
    rate = ttft.PrefillRate(4e-5)
    times = []
    for h, row in zip(hashes, rows, strict=True):
        t = time.perf_counter()
        ttft.predicted_ttft(
            cands,
            prompt_tokens=row.input_length,
            hashes=h,
            block_size=16,
            index=index,
            rates={},
            default_rate=rate,
        )
        times.append(time.perf_counter() - t)
    fresh = ttft.CacheIndex()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for seq, payload in enumerate(payloads):
        apply(fresh, "r0", StreamStats(), seq, payload)
    per_block = (tracemalloc.get_traced_memory()[0] - before) / max(fresh.blocks("r0"), 1)
    tracemalloc.stop()
    print(
        json.dumps(
            {
                "trace_rows": len(rows),
                "virtual_seconds": round(span, 1),
                "feed_batches_per_s": round(len(batches) / span, 1),
                "feed_blocks_per_s": round(blocks / span),
                "ingest_blocks_per_cpu_s": round(blocks / ingest),
                "feed_cpu_share": round(ingest / span, 4),
                "pick_us_mean": round(1e6 * statistics.mean(times), 1),
                "pick_us_p99": round(1e6 * sorted(times)[int(0.99 * (len(times) - 1))], 1),
                "prompt_blocks_mean": round(statistics.mean(len(h) for h in hashes)),
                "index_bytes_per_block": round(per_block, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
