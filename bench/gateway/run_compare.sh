#!/usr/bin/env bash
# Two router checkouts side by side: the OLD and the NEW router in the same runs, against the
# same mock, each pinned to the same gateway CPU in turn, alternating which goes first.
#   git worktree add /tmp/router-old main
#   ./run_compare.sh /tmp/router-old                   # 3 rounds, c=1,10,50, 5 s cells
#   ./run_compare.sh /tmp/router-old --rounds 5 --duration 10 --gateway-cpu 2 --loadgen-cpu 0-1
# NEW is this checkout; extra args go to run_bench.py (--rounds is ours). Prints every round
# and the ratios (compare_summary.py). GWBENCH_PYTHON: an interpreter with aiohttp, uvloop
# and orjson (both routers run under it, so only their code differs).
set -euo pipefail
cd "$(dirname "$0")"
OLD=$(cd "${1:?usage: run_compare.sh OLD_CHECKOUT [--rounds N] [run_bench args]}" && pwd)
shift
ROUNDS=3
if [ "${1:-}" = "--rounds" ]; then ROUNDS=$2; shift 2; fi
NEW=$(cd ../.. && pwd)
V=${GWBENCH_PYTHON:-/tmp/gwbench-venv/bin/python}
mkdir -p results
cat > results/router_table.json <<'JSON'
{"version": 1, "models": {"m1": {"endpoints": [{"pod": "mock-0", "address": "127.0.0.1:18001"}]}}}
JSON
table=$(pwd)/results/router_table.json
flags="--host 127.0.0.1 --table-file $table --table-poll-seconds 0"
stamp=$(date -u +%Y%m%d-%H%M%S)
runs=()
for round in $(seq 1 "$ROUNDS"); do
  old=(--cmd-target old http://127.0.0.1:8080 "python $OLD/bench/gateway/run_router.py --port 8080 $flags")
  new=(--cmd-target new http://127.0.0.1:8081 "python $NEW/bench/gateway/run_router.py --port 8081 $flags")
  if [ $((round % 2)) -eq 1 ]; then order=("${old[@]}" "${new[@]}"); targets=direct,old,new
  else order=("${new[@]}" "${old[@]}"); targets=direct,new,old; fi
  out="results/compare-$stamp-$round"
  timeout 1500 "$V" run_bench.py --out "$out" --targets "$targets" --duration 5 --warmup 1 \
    "${order[@]}" "$@" > "$out.txt" 2>&1 || { tail -20 "$out.txt"; exit 1; }
  runs+=("$out")
done
"$V" compare_summary.py "${runs[@]}"
