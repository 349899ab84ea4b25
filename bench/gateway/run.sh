#!/usr/bin/env bash
# Our router, LiteLLM and the minimal aiohttp proxy side by side in ONE run against the same
# mock, each gateway pinned to CPU 1 (mock + load generator on CPU 0). See README.md.
#   ./setup_venvs.sh && ./run.sh                       # defaults: 5 s cells after 1 s warm-up
#   ./run.sh --duration 10 --warmup 2                  # longer cells; extra args go to run_bench.py
set -euo pipefail
cd "$(dirname "$0")"
# GWBENCH_PYTHON: an interpreter that has the harness's packages, where /tmp/gwbench-venv is not.
V=${GWBENCH_PYTHON:-/tmp/gwbench-venv/bin/python}
mkdir -p results
# The routing table the operator would push: model m1 -> the mock, least in-flight (default).
cat > results/router_table.json <<'JSON'
{"version": 1, "models": {"m1": {"endpoints": [{"pod": "mock-0", "address": "127.0.0.1:18001"}]}}}
JSON
name=router-$(date -u +%Y%m%d-%H%M%S)
targets=direct,aiohttp,inferscale
[ -x /tmp/gwbench-venv/bin/litellm ] && targets=direct,litellm,aiohttp,inferscale
# Real features on: least-in-flight picking, retries/breaker armed, metrics, JSON access log
# (to the gateway's log file in results/), hold queue; uvloop as in the minimal proxy.
timeout 1500 "$V" run_bench.py --out "results/$name" --targets "$targets" --duration 5 --warmup 1 \
  --cmd-target inferscale http://127.0.0.1:8080 \
  "python run_router.py --host 127.0.0.1 --port 8080 --table-file results/router_table.json --table-poll-seconds 0" \
  "$@" 2>&1 | tee "results/$name.txt"
"$V" summarize.py "results/$name" 2>/dev/null || true
