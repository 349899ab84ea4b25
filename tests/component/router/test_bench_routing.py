"""bench/routing/run_bench.py end to end, tiny: 2 sims with KV events behind a real router.

``predictedTTFT`` through the router needs the sims' events in its index; this runs a dozen
short prompts sharing a prefix and checks the index filled from the streams, no stream
resynced, and the sims served the shared prefix from their caches.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROUTING = Path(__file__).resolve().parents[3] / "bench" / "routing"
sys.path.append(str(ROUTING))  # run_bench.py imports its siblings by name
spec = importlib.util.spec_from_file_location("bench_routing_run_bench", ROUTING / "run_bench.py")
assert spec is not None and spec.loader is not None
run_bench = importlib.util.module_from_spec(spec)
sys.modules.setdefault("bench_routing_run_bench", run_bench)
spec.loader.exec_module(run_bench)


def test_predicted_ttft_runs_through_the_router_on_the_sims_events():
    ap = argparse.ArgumentParser()
    run_bench.add_workload_arguments(ap)
    args = ap.parse_args(["--replicas", "2", "--block-words", "16", "--host-factor", "4"])
    args.request_timeout, args.no_kv_events, args.log = 30.0, False, None
    prompts = run_bench.Prompts(args.block_words)
    # 12 prompts 0.1 s apart: two shared trace blocks (32 sim tokens), then one of their own.
    rows = [run_bench.Row(0.1 * i, 3 * 512, 4, (1, 2, 100 + i)) for i in range(12)]
    r = run_bench.run_picker("predictedTTFT", rows, prompts, args, 1.0)
    assert r["ok"] == 12
    used = sum(1 for n in r["per_replica"] if n)
    assert sum(r["per_replica"]) == 12
    # The index holds what the sims do: each prompt's own block, and the two shared ones on
    # each replica that served any; never more. At least prompts 2-11's own blocks are in: the
    # first prompt's events may precede the subscription (ZMQ's slow joiner), the last one's
    # may still be on their way (the subscriber reads every 50 ms).
    assert 10 <= r["index_blocks_end"] <= 2 * used + 12
    assert r["kv_resyncs"] == 0
    # All but each replica's first prompt find the shared two of their three blocks cached.
    assert r["prefix_hit_rate"] >= (12 - used) * 32 / (12 * 48) - 1e-3
