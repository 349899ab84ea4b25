#!/usr/bin/env python3
"""Old router against new, from the results folders of run_compare.sh: every round and the ratios.

  python compare_summary.py results/compare-<stamp>-1 results/compare-<stamp>-2 ...

Per round and mode: each router's best throughput over the concurrency levels and the ratio
new/old; the added median latency at concurrency 1 (router p50 minus the direct p50 of the same
round); and the router process's CPU milliseconds per request at the highest concurrency (less
sensitive than throughput to other processes on a shared machine). Then the medians over the
rounds.
"""

import json
import os
import statistics
import sys


def rows(folder):
    with open(os.path.join(folder, "summary.json")) as f:
        return json.load(f)["results"]


def figures(results, target, mode):
    """(best req/s, added p50 at c=1 in ms, CPU ms per request at the highest c)."""
    mine = [r for r in results if r["target"] == target and r["mode"] == mode]
    direct = {r["c"]: r for r in results if r["target"] == "direct" and r["mode"] == mode}
    best = max(r["rps"] for r in mine)
    one = next(r for r in mine if r["c"] == 1)
    added = one["lat_ms"]["p50"] - direct[1]["lat_ms"]["p50"] if 1 in direct else float("nan")
    top = max(mine, key=lambda r: r["c"])
    return best, added, top.get("gw_cpu_ms_per_req") or float("nan")


def main(folders):
    print(
        "| round | mode | old max req/s | new max req/s | new/old | added p50 c=1 old / new ms "
        "| new - old ms | CPU ms/req old / new | new/old CPU |"
    )
    print("|" + "---|" * 9)
    seen = {}
    for n, folder in enumerate(folders, 1):
        results = rows(folder)
        for mode in ("nonstream", "stream"):
            old_rps, old_p50, old_cpu = figures(results, "old", mode)
            new_rps, new_p50, new_cpu = figures(results, "new", mode)
            ratio, delta, cpu = new_rps / old_rps, new_p50 - old_p50, new_cpu / old_cpu
            for key, value in (("ratio", ratio), ("delta", delta), ("cpu", cpu)):
                seen.setdefault((mode, key), []).append(value)
            print(
                f"| {n} | {mode} | {old_rps:.0f} | {new_rps:.0f} | {ratio:.3f} | "
                f"{old_p50:.3f} / {new_p50:.3f} | {delta:+.3f} | {old_cpu:.3f} / {new_cpu:.3f} "
                f"| {cpu:.3f} |"
            )
    for mode in ("nonstream", "stream"):
        ratios, deltas, cpus = (seen[(mode, k)] for k in ("ratio", "delta", "cpu"))
        print(
            f"{mode}: median new/old throughput {statistics.median(ratios):.3f} "
            f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}); median added p50 new - old "
            f"{statistics.median(deltas):+.3f} ms; median new/old CPU per request "
            f"{statistics.median(cpus):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
