#!/usr/bin/env bash
# The router with client keys and limits on, beside the same router without them and the
# minimal aiohttp proxy (which checks a key too), in ONE run against the same mock (README.md,
# "Keys and limits"). Three router configurations, each pinned to CPU 1 in turn:
#   inferscale        no client keys (the data-plane configuration of run.sh)
#   inferscale-keys   a key required and every limit on (rpm, tpm, day and month budgets), in process
#   inferscale-redis  the same limits shared through a local redis-server (CPU 0, no persistence)
#   inferscale-batch  the same through Redis, batched: local counters synced every 5 ms
#   ./setup_venvs.sh && ./run_keys.sh                  # defaults: 5 s cells after 1 s warm-up
set -euo pipefail
cd "$(dirname "$0")"
# GWBENCH_PYTHON: an interpreter that has the harness's packages, where /tmp/gwbench-venv is not.
V=${GWBENCH_PYTHON:-/tmp/gwbench-venv/bin/python}
mkdir -p results
cat > results/router_table.json <<'JSON'
{"version": 1, "models": {"m1": {"endpoints": [{"pod": "mock-0", "address": "127.0.0.1:18001"}]}}}
JSON
REDIS_PORT=${REDIS_PORT:-18379}
redis_dir=$(mktemp -d)
with_redis=1
targets=direct,aiohttp,inferscale,inferscale-keys,inferscale-redis,inferscale-batch
if command -v redis-server >/dev/null; then
  taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$redis_dir" --daemonize no --loglevel warning >"$redis_dir/log" 2>&1 &
  redis_pid=$!
  trap 'kill "$redis_pid" 2>/dev/null || true; rm -rf "$redis_dir"' EXIT
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
else
  echo "redis-server not found: the inferscale-redis configuration is left out" >&2
  trap 'rm -rf "$redis_dir"' EXIT
  targets=direct,aiohttp,inferscale,inferscale-keys
  with_redis=0
fi
name=keys-$(date -u +%Y%m%d-%H%M%S)
common="--host 127.0.0.1 --table-file results/router_table.json --table-poll-seconds 0"
redis_target=()
[ "$with_redis" = 1 ] && redis_target=(--cmd-target inferscale-redis http://127.0.0.1:8082
  "python run_router.py --port 8082 $common --bench-keys results/$name-credentials-redis.json --bench-redis-url redis://127.0.0.1:$REDIS_PORT/0"
  --cmd-target inferscale-batch http://127.0.0.1:8083
  "python run_router.py --port 8083 $common --bench-keys results/$name-credentials-batch.json --bench-redis-url redis://127.0.0.1:$REDIS_PORT/0 --bench-redis-sync 0.005")
timeout 1500 "$V" run_bench.py --out "results/$name" --duration 5 --warmup 1 \
  --targets "$targets" \
  --cmd-target inferscale http://127.0.0.1:8080 "python run_router.py --port 8080 $common" \
  --cmd-target inferscale-keys http://127.0.0.1:8081 \
  "python run_router.py --port 8081 $common --bench-keys results/$name-credentials.json" \
  "${redis_target[@]}" \
  "$@" 2>&1 | tee "results/$name.txt"
"$V" summarize.py "results/$name" 2>/dev/null || true
