#!/usr/bin/env bash
# Settings shared by `make dev` (up.sh) and `make dev-down` (down.sh); sourced, not run.
# Every one can be overridden from the environment, e.g. DEV_SHORT=1 make dev. The defaults are
# the local cluster's own (`inferscale cluster up`): state in .cluster/, name dev, API server
# on port 16443 (7 more ports follow it), pods in 10.244.0.0/16.
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# The interpreter with inferscale installed (`make install` makes .venv).
DEV_PYTHON=${DEV_PYTHON:-$REPO/.venv/bin/python}
# The local cluster: its state directory (the CLI reads INFERSCALE_CLUSTER_DIR), name, first
# port and pod range. Two clusters on one machine need different ones of all four.
export INFERSCALE_CLUSTER_DIR=${INFERSCALE_CLUSTER_DIR:-$REPO/.cluster}
DEV_CLUSTER_NAME=${DEV_CLUSTER_NAME:-dev}
DEV_PORT_BASE=${DEV_PORT_BASE:-16443}
DEV_POD_CIDR=${DEV_POD_CIDR:-10.244.0.0/16}
# The chart's release and namespace, and where the sim model goes.
DEV_RELEASE=${DEV_RELEASE:-inferscale}
DEV_NAMESPACE=${DEV_NAMESPACE:-inferscale-system}
DEV_MODEL_NAMESPACE=${DEV_MODEL_NAMESPACE:-default}
# 1: a 38 s load test with shorter autoscaling windows (what e2e/test_dev.py runs).
DEV_SHORT=${DEV_SHORT:-0}
# Extra arguments for `helm upgrade --install`, split on spaces (e.g. "--set router.replicas=3").
DEV_HELM_ARGS=${DEV_HELM_ARGS:-}

# What examples/sim-model.yaml declares (tests/component/chart/test_dev_scripts.py checks it).
MODEL=sim-llama
SERVED=llama-3.1-8b-sim
# The router container's port (the chart's router.port).
ROUTER_PORT=8080
# Where the load test's JSON summary is kept (logs/ survives `make dev-down`).
LOADTEST_JSON=$INFERSCALE_CLUSTER_DIR/logs/dev-loadtest.json

# The load test (requests/s per stage) and the sim model's demo settings, a merge patch over
# examples/sim-model.yaml: a 2 s cold start, ~1 s per request of 64 tokens (as in
# e2e/test_autoscaling.py), one replica at rest, and a small target, so that 12 requests/s
# (about 12 in flight) want 3 to 4 replicas. The windows are short so that the scale-down shows
# within the run; DEV_SHORT shortens them further.
if [[ "$DEV_SHORT" == 1 ]]; then
  STAGES=3s@1,15s@12,20s@0
  WINDOWS='"stableWindowSeconds": 10, "panicWindowSeconds": 4, "scaleDownDelaySeconds": 5'
else
  STAGES=20s@1,60s@12,50s@0
  WINDOWS='"stableWindowSeconds": 20, "panicWindowSeconds": 6, "scaleDownDelaySeconds": 15'
fi
MODEL_PATCH='{"spec": {
  "args": ["--startup-delay-seconds", "2", "--step-base-seconds", "0.015",
           "--decode-seconds-per-seq", "0.0005", "--default-max-tokens", "64"],
  "minReplicas": 1,
  "maxReplicas": 4,
  "autoscaling": {"enabled": true, "targetInFlightPerReplica": 4, "maxScaleUpStep": 4,
                  '"$WINDOWS"', "scaleToZeroDelaySeconds": null},
  "serving": {"terminationGracePeriodSeconds": 10, "startupTimeoutSeconds": 120}}}'

say() { printf '\033[1m[dev %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

inferscale() { "$DEV_PYTHON" -m inferscale "$@"; }

# A path as the user would type it from the repository root.
shown() { local path=$1; [[ "$path" == "$REPO/"* ]] && path=${path#"$REPO/"}; printf '%s' "$path"; }

[[ -x "$DEV_PYTHON" ]] || die "$DEV_PYTHON is missing: run \`make install\` (or set DEV_PYTHON)"
