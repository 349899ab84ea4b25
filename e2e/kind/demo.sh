#!/usr/bin/env bash
# Load the sim model through the router and watch it scale: a port-forward to the router
# Service, `inferscale loadtest` in the foreground, and the InferenceModel's replicas printed
# every few seconds beside it. Run e2e/kind/up.sh first.
#
#   RATE=40 DURATION=180 e2e/kind/demo.sh
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
need kubectl curl "$INFERSCALE"
RATE=${RATE:-20}
DURATION=${DURATION:-120}
MODEL=${MODEL:-sim-llama}

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

say "port-forwarding service/$RELEASE-router to 127.0.0.1:$LOCAL_PORT"
kc -n "$NAMESPACE" port-forward "service/$RELEASE-router" "$LOCAL_PORT:80" >/dev/null &
pids+=($!)
for _ in $(seq 1 30); do
  curl -fsS "http://127.0.0.1:$LOCAL_PORT/healthz" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS "http://127.0.0.1:$LOCAL_PORT/healthz" >/dev/null || { say "the router is not reachable"; exit 1; }

# The replicas, as the operator reports them, while the load runs.
(
  while true; do
    kc get inferencemodel "$MODEL" --no-headers \
      -o custom-columns='MODEL:.metadata.name,DESIRED:.status.desiredReplicas,READY:.status.readyReplicas,REASON:.status.lastScaleReason' \
      | sed "s/^/[replicas $(date +%H:%M:%S)] /" >&2 || true
    sleep 5
  done
) &
pids+=($!)

say "load test: $RATE requests/s for $DURATION s"
"$INFERSCALE" loadtest --url "http://127.0.0.1:$LOCAL_PORT/v1" --rate "$RATE" --duration "$DURATION"
say "done; the model scales back down after its scale-down delay (kubectl get inferencemodels -w)"
