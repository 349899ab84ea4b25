#!/usr/bin/env python3
"""Old router against new, from the results folders of run_compare.sh: every round and the ratios.

  python compare_summary.py results/compare-<stamp>-1 results/compare-<stamp>-2 ...

Per round and mode: each router's best throughput over the concurrency levels, the ratio
new/old, and the added median latency at concurrency 1 (router p50 minus the direct p50 of the
same round). Then the median of the rounds' ratios and differences.
"""

import json
import os
import statistics
import sys


def rows(folder):
    with open(os.path.join(folder, "summary.json")) as f:
        return json.load(f)["results"]


def figures(results, target, mode):
    mine = [r for r in results if r["target"] == target and r["mode"] == mode]
    direct = {r["c"]: r for r in results if r["target"] == "direct" and r["mode"] == mode}
    best = max(r["rps"] for r in mine)
    one = next(r for r in mine if r["c"] == 1)
    added = one["lat_ms"]["p50"] - direct[1]["lat_ms"]["p50"] if 1 in direct else None
    return best, added


def main(folders):
    print(
        "| round | mode | old max req/s | new max req/s | new/old | old added p50 c=1 ms "
        "| new added p50 c=1 ms | new - old ms |"
    )
    print("|" + "---|" * 8)
    ratios, deltas = {}, {}
    for n, folder in enumerate(folders, 1):
        results = rows(folder)
        for mode in ("nonstream", "stream"):
            old_rps, old_p50 = figures(results, "old", mode)
            new_rps, new_p50 = figures(results, "new", mode)
            ratio = new_rps / old_rps
            delta = new_p50 - old_p50 if old_p50 is not None and new_p50 is not None else None
            ratios.setdefault(mode, []).append(ratio)
            if delta is not None:
                deltas.setdefault(mode, []).append(delta)
            print(
                f"| {n} | {mode} | {old_rps:.0f} | {new_rps:.0f} | {ratio:.3f} | "
                f"{old_p50:.3f} | {new_p50:.3f} | {delta:+.3f} |"
            )
    for mode in ("nonstream", "stream"):
        d = deltas.get(mode) or [float("nan")]
        print(
            f"{mode}: median new/old throughput {statistics.median(ratios[mode]):.3f} "
            f"(rounds: {', '.join(f'{r:.3f}' for r in ratios[mode])}); median added p50 "
            f"new - old {statistics.median(d):+.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
